//! Watches scoped to the namespaces the operator watches (`watch.namespaces`): one watch of
//! the whole cluster when the list is empty, else one watch per namespace, merged into one
//! stream that behaves like a single watch of all of them.
//!
//! Why merge by hand: a kube-runtime reflector store takes one watch's `Init` …
//! `InitDone` as "this is everything there is" and replaces its whole content, so two
//! watches cannot feed one store directly — a re-list of one namespace would empty the
//! other. [`merge`] keeps the last listing of each namespace and, whenever one of them is
//! listed (again), replays the union as one `Init` … `InitDone`; `Apply` and `Delete`
//! pass through. Readers (stores, triggers) see what one cluster-wide watch restricted to
//! those namespaces would give. The price: the objects are held twice (here and in the
//! store), after they were cut down by the watch's `strip` function.

use std::collections::BTreeMap;
use std::fmt::Debug;

use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use kube::api::Api;
use kube::core::NamespaceResourceScope;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;

/// A watch's events, as a boxed stream.
pub type Events<K> = BoxStream<'static, watcher::Result<Event<K>>>;

/// Watches `K` in `namespaces` (all namespaces when empty) with `config`, each watch with
/// the default backoff and every object cut down by `strip` as it arrives.
pub fn scoped<K>(
    client: &Client,
    namespaces: &[String],
    config: &watcher::Config,
    strip: fn(&mut K),
) -> Events<K>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Debug
        + Send
        + Sync
        + 'static,
{
    let one = |api: Api<K>| {
        watcher::watcher(api, config.clone())
            .default_backoff()
            .modify(strip)
            .boxed()
    };
    match namespaces {
        [] => one(Api::all(client.clone())),
        [namespace] => one(Api::namespaced(client.clone(), namespace)),
        many => merge(
            many.iter()
                .map(|ns| one(Api::namespaced(client.clone(), ns)))
                .collect(),
        )
        .boxed(),
    }
}

/// Merges the event streams of several watches (of disjoint sets of objects, e.g. one per
/// namespace) into the events of one watch of them all: nothing before every watch has
/// listed once, then the union as one `Init` … `InitDone`; afterwards `Apply` and `Delete`
/// as they come, and the union again each time one watch has listed again. Errors pass
/// through.
pub fn merge<K>(streams: Vec<Events<K>>) -> impl Stream<Item = watcher::Result<Event<K>>> + Send
where
    K: Resource + Clone + Send + 'static,
{
    let mut merger = Merger::new(streams.len());
    let tagged = futures::stream::select_all(
        streams
            .into_iter()
            .enumerate()
            .map(|(i, s)| s.map(move |e| (i, e)).boxed()),
    );
    tagged.flat_map(move |(i, event)| futures::stream::iter(merger.step(i, event)))
}

/// Key of an object in the merged listing.
type Key = (String, String);

fn key_of<K: Resource>(obj: &K) -> Key {
    (obj.namespace().unwrap_or_default(), obj.name_any())
}

/// The state of [`merge`]: per watch, its last complete listing (kept up to date by its
/// `Apply` and `Delete` events), and the listing in progress.
struct Merger<K> {
    listed: Vec<Option<BTreeMap<Key, K>>>,
    listing: Vec<Option<BTreeMap<Key, K>>>,
}

impl<K: Resource + Clone> Merger<K> {
    fn new(watches: usize) -> Self {
        Self {
            listed: vec![None; watches],
            listing: vec![None; watches],
        }
    }

    fn all_listed(&self) -> bool {
        self.listed.iter().all(Option::is_some)
    }

    /// The union of the listings as one listing.
    fn replay(&self) -> Vec<watcher::Result<Event<K>>> {
        let objects = self.listed.iter().flatten().flat_map(BTreeMap::values);
        std::iter::once(Ok(Event::Init))
            .chain(objects.map(|o| Ok(Event::InitApply(o.clone()))))
            .chain(std::iter::once(Ok(Event::InitDone)))
            .collect()
    }

    /// What watch `i`'s `event` turns into.
    fn step(
        &mut self,
        i: usize,
        event: watcher::Result<Event<K>>,
    ) -> Vec<watcher::Result<Event<K>>> {
        let event = match event {
            Ok(event) => event,
            Err(error) => return vec![Err(error)],
        };
        match event {
            Event::Init => {
                self.listing[i] = Some(BTreeMap::new());
                Vec::new()
            }
            Event::InitApply(obj) => {
                self.listing[i]
                    .get_or_insert_with(BTreeMap::new)
                    .insert(key_of(&obj), obj);
                Vec::new()
            }
            Event::InitDone => {
                self.listed[i] = Some(self.listing[i].take().unwrap_or_default());
                if self.all_listed() {
                    self.replay()
                } else {
                    Vec::new()
                }
            }
            Event::Apply(obj) => {
                self.listed[i]
                    .get_or_insert_with(BTreeMap::new)
                    .insert(key_of(&obj), obj.clone());
                self.pass(Event::Apply(obj))
            }
            Event::Delete(obj) => {
                if let Some(listed) = &mut self.listed[i] {
                    listed.remove(&key_of(&obj));
                }
                self.pass(Event::Delete(obj))
            }
        }
    }

    /// `event` once every watch has listed; before, it is part of the first replay.
    fn pass(&self, event: Event<K>) -> Vec<watcher::Result<Event<K>>> {
        if self.all_listed() {
            vec![Ok(event)]
        } else {
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::channel::mpsc;
    use k8s_openapi::api::core::v1::ServiceAccount;
    use kube::runtime::reflector;

    fn sa(namespace: &str, name: &str) -> ServiceAccount {
        let mut sa = ServiceAccount::default();
        sa.metadata.namespace = Some(namespace.into());
        sa.metadata.name = Some(name.into());
        sa
    }

    fn names(store: &reflector::Store<ServiceAccount>) -> Vec<String> {
        let mut out: Vec<String> = store
            .state()
            .iter()
            .map(|s| format!("{}/{}", s.namespace().unwrap(), s.name_any()))
            .collect();
        out.sort();
        out
    }

    type Tx = mpsc::UnboundedSender<watcher::Result<Event<ServiceAccount>>>;

    fn send(tx: &Tx, events: Vec<Event<ServiceAccount>>) {
        for e in events {
            tx.unbounded_send(Ok(e)).unwrap();
        }
    }

    /// Drives the merged stream until it has nothing ready.
    async fn drain(s: &mut (impl Stream<Item = watcher::Result<Event<ServiceAccount>>> + Unpin)) {
        while let Some(Some(_)) = futures::FutureExt::now_or_never(s.next()) {}
    }

    #[tokio::test]
    async fn a_store_fed_by_two_namespace_watches_holds_both_and_survives_a_relist() {
        let (a_tx, a_rx) = mpsc::unbounded();
        let (b_tx, b_rx) = mpsc::unbounded();
        let (store, writer) = reflector::store::<ServiceAccount>();
        let mut merged = Box::pin(merge(vec![a_rx.boxed(), b_rx.boxed()]).reflect(writer));

        // Namespace a lists; the store is not ready until b has listed too.
        send(
            &a_tx,
            vec![
                Event::Init,
                Event::InitApply(sa("a", "one")),
                Event::InitDone,
            ],
        );
        drain(&mut merged).await;
        assert!(futures::FutureExt::now_or_never(store.wait_until_ready()).is_none());
        // A change in a before b listed is not lost.
        send(&a_tx, vec![Event::Apply(sa("a", "two"))]);
        send(
            &b_tx,
            vec![Event::Init, Event::InitApply(sa("b", "x")), Event::InitDone],
        );
        drain(&mut merged).await;
        assert!(futures::FutureExt::now_or_never(store.wait_until_ready()).is_some());
        assert_eq!(names(&store), ["a/one", "a/two", "b/x"]);

        // Live changes pass through.
        send(&b_tx, vec![Event::Apply(sa("b", "y"))]);
        send(&a_tx, vec![Event::Delete(sa("a", "one"))]);
        drain(&mut merged).await;
        assert_eq!(names(&store), ["a/two", "b/x", "b/y"]);

        // b lists again (after a 410 Gone): its missing object goes, a's stay. While b is
        // listing, a's changes still pass.
        send(&b_tx, vec![Event::Init, Event::InitApply(sa("b", "y"))]);
        send(&a_tx, vec![Event::Apply(sa("a", "three"))]);
        drain(&mut merged).await;
        assert_eq!(names(&store), ["a/three", "a/two", "b/x", "b/y"]);
        send(&b_tx, vec![Event::InitDone]);
        drain(&mut merged).await;
        assert_eq!(names(&store), ["a/three", "a/two", "b/y"]);
    }

    #[tokio::test]
    async fn the_merged_relist_is_one_init_with_every_object_and_errors_pass_through() {
        let mut m = Merger::<ServiceAccount>::new(2);
        assert!(m.step(0, Ok(Event::Init)).is_empty());
        assert!(m.step(0, Ok(Event::InitApply(sa("a", "1")))).is_empty());
        assert!(m.step(0, Ok(Event::InitDone)).is_empty());
        assert!(m.step(1, Ok(Event::Init)).is_empty());
        let out = m.step(1, Ok(Event::InitDone));
        let kinds: Vec<String> = out
            .iter()
            .map(|e| match e {
                Ok(Event::Init) => "init".to_string(),
                Ok(Event::InitApply(o)) => format!("apply {}", o.name_any()),
                Ok(Event::InitDone) => "done".to_string(),
                _ => "other".to_string(),
            })
            .collect();
        assert_eq!(kinds, ["init", "apply 1", "done"]);
        let err = m.step(1, Err(watcher::Error::NoResourceVersion));
        assert!(matches!(
            err.as_slice(),
            [Err(watcher::Error::NoResourceVersion)]
        ));
    }
}
