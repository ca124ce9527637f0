//! Fan-out plugin: the Secret goes to every candidate namespace that carries
//! a given label (optionally with a given value), except `kube-*` namespaces.
//!
//! Settings (JSON): `{"label": "ecr-pull", "value": "enabled"}`; `label` is
//! required, `value` is optional (without it, any value matches).

wit_bindgen::generate!({ path: "../../wit", world: "fanout-policy" });

use exports::ecr_token_refresh::policy::{fanout, settings};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    label: String,
    #[serde(default)]
    value: Option<String>,
}

fn parse(settings: &str) -> Result<Settings, String> {
    let s: Settings =
        serde_json::from_str(settings).map_err(|e| format!("invalid settings: {e}"))?;
    if s.label.is_empty() {
        return Err("invalid settings: label must not be empty".to_owned());
    }
    Ok(s)
}

struct Plugin;

impl settings::Guest for Plugin {
    fn validate_settings(settings: String) -> Result<(), String> {
        parse(&settings).map(|_| ())
    }
}

impl fanout::Guest for Plugin {
    fn select_namespaces(
        settings: String,
        _cr: fanout::CrInfo,
        candidates: Vec<fanout::NamespaceInfo>,
    ) -> Result<Vec<String>, String> {
        let s = parse(&settings)?;
        Ok(candidates
            .into_iter()
            .filter(|ns| !ns.name.starts_with("kube-"))
            .filter(|ns| {
                ns.labels
                    .iter()
                    .any(|(k, v)| *k == s.label && s.value.as_ref().is_none_or(|want| want == v))
            })
            .map(|ns| ns.name)
            .collect())
    }
}

export!(Plugin);

/// A bump allocator: allocation is a pointer increment, and memory is reclaimed all at
/// once when the last live allocation is freed (at the end of a call, once the host has
/// read the answer).
///
/// Passing 10,000 candidate namespaces means tens of thousands of string allocations (the
/// canonical ABI lowers each string through `cabi_realloc`) and as many frees; here each
/// costs a few instructions. Within one call nothing is reused, which is bounded by the
/// host's memory limit (16 MiB by default).
mod bump {
    use std::alloc::{GlobalAlloc, Layout};
    use std::cell::Cell;

    const PAGE: usize = 65536;
    /// Grow linear memory by at least 1 MiB at a time.
    const MIN_GROW_PAGES: usize = 16;

    pub struct Bump {
        /// First byte of the region allocations start from after a reset.
        start: Cell<usize>,
        next: Cell<usize>,
        end: Cell<usize>,
        /// Allocations not freed yet.
        live: Cell<usize>,
    }

    // SAFETY: a wasm32-wasip2 component instance runs on one thread.
    unsafe impl Sync for Bump {}

    impl Bump {
        fn take(&self, layout: Layout) -> Option<usize> {
            let align = layout.align();
            let start = self.next.get().checked_add(align - 1)? & !(align - 1);
            let end = start.checked_add(layout.size())?;
            (end <= self.end.get()).then(|| {
                self.next.set(end);
                self.live.set(self.live.get() + 1);
                start
            })
        }
    }

    unsafe impl GlobalAlloc for Bump {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            if let Some(p) = self.take(layout) {
                return p as *mut u8;
            }
            let pages = (layout.size() + layout.align())
                .div_ceil(PAGE)
                .max(MIN_GROW_PAGES);
            let previous = core::arch::wasm32::memory_grow(0, pages);
            if previous == usize::MAX {
                return core::ptr::null_mut();
            }
            let base = previous * PAGE;
            if base != self.end.get() {
                // First use, or someone else (libc) grew memory in between: continue in
                // the new region (and reset to it from now on).
                self.next.set(base);
                self.start.set(base);
            }
            self.end.set(base + pages * PAGE);
            self.take(layout)
                .map_or(core::ptr::null_mut(), |p| p as *mut u8)
        }

        unsafe fn dealloc(&self, _ptr: *mut u8, _layout: Layout) {
            let live = self.live.get().saturating_sub(1);
            self.live.set(live);
            if live == 0 {
                self.next.set(self.start.get());
            }
        }

        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            // The last allocation grows (or shrinks) in place.
            let at = ptr as usize;
            if at + layout.size() == self.next.get() && at + new_size <= self.end.get() {
                self.next.set(at + new_size);
                return ptr;
            }
            // SAFETY: same contract as GlobalAlloc::realloc's default.
            unsafe {
                let new = self.alloc(Layout::from_size_align_unchecked(new_size, layout.align()));
                if !new.is_null() {
                    core::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                    self.dealloc(ptr, layout);
                }
                new
            }
        }
    }

    #[global_allocator]
    static ALLOCATOR: Bump = Bump {
        start: Cell::new(0),
        next: Cell::new(0),
        end: Cell::new(0),
        live: Cell::new(0),
    };
}
