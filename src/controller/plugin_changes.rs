//! Plugin changes as reconcile triggers: when the version of a plugin that serves
//! changes (loaded, replaced, failed, removed), the resources that select it are
//! reconciled again; when a replacement is refused (the previous version keeps serving),
//! they get a Warning Event saying why, and nothing else changes for them.

use std::sync::Arc;

use futures::{Stream, StreamExt};
use kube::runtime::reflector::{ObjectRef, Store};
use tokio::sync::broadcast::{self, error::RecvError};

use super::Context;
use super::apply;
use super::triggers::plugin_users;
use crate::api::ECRTokenRefresh;
use crate::policy::{PluginEvent, PluginEventKind};

/// Reason of the Warning Event about a refused replacement.
pub const PLUGIN_REPLACEMENT_REJECTED: &str = "PluginReplacementRejected";

/// The resources to reconcile after each plugin event of `changes` (read from the
/// resource store `crs`). Refused replacements publish Events through `ctx` instead.
/// After missed events (a lagging receiver) every resource that selects any plugin is
/// reconciled.
pub fn reconcile_requests(
    changes: broadcast::Receiver<PluginEvent>,
    crs: Store<ECRTokenRefresh>,
    ctx: Arc<Context>,
) -> impl Stream<Item = ObjectRef<ECRTokenRefresh>> + Send + 'static {
    futures::stream::unfold(changes, |mut rx| async move {
        match rx.recv().await {
            Ok(event) => Some((Some(event), rx)),
            Err(RecvError::Lagged(missed)) => {
                tracing::warn!(missed, "missed plugin events; reconciling every resource that selects a plugin");
                Some((None, rx))
            }
            Err(RecvError::Closed) => None,
        }
    })
    .flat_map(move |event| {
        let users = plugin_users(&crs, event.as_ref().map(|e| e.plugin.as_str()));
        let refs: Vec<ObjectRef<ECRTokenRefresh>> = match event {
            Some(PluginEvent {
                kind: PluginEventKind::Rejected(_),
                ..
            }) => {
                let note = event.map(|e| e.to_string()).unwrap_or_default();
                warn_users(Arc::clone(&ctx), users, note);
                Vec::new()
            }
            other => {
                if let Some(e) = &other {
                    tracing::info!(plugin = %e.plugin, change = e.kind.label(), resources = users.len(), "policy plugin changed; reconciling the resources that select it");
                }
                users.iter().map(|cr| ObjectRef::from_obj(cr.as_ref())).collect()
            }
        };
        futures::stream::iter(refs)
    })
}

/// Publishes a Warning Event with `note` on each of `users`, in the background.
fn warn_users(ctx: Arc<Context>, users: Vec<Arc<ECRTokenRefresh>>, note: String) {
    if users.is_empty() {
        return;
    }
    tokio::spawn(async move {
        for cr in users {
            apply::event(
                &ctx,
                &cr,
                true,
                PLUGIN_REPLACEMENT_REJECTED,
                &note,
                "LoadPlugin",
            )
            .await;
        }
    });
}
