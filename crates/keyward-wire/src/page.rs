//! A page of any list, as the API returns it.

use serde::{Deserialize, Serialize};

use crate::audit::{AuditEventView, AuditPage};
use crate::credits::{LedgerEntryView, LedgerPage};
use crate::keys::{KeyPage, KeyView};
use crate::tenants::{TenantPage, TenantView};

/// One page of a list: the items, newest first, and the cursor of the next
/// page. [`KeyPage`], [`TenantPage`], [`AuditPage`] and [`LedgerPage`] are
/// this shape under the names the OpenAPI document gives them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Page<T> {
    pub data: Vec<T>,
    /// Pass as `cursor` to get the next page; `null` on the last page.
    pub next_cursor: Option<String>,
    pub has_more: bool,
}

macro_rules! page_from {
    ($($named:ident => $item:ident),* $(,)?) => {$(
        impl From<$named> for Page<$item> {
            fn from(p: $named) -> Page<$item> {
                Page {
                    data: p.data,
                    next_cursor: p.next_cursor,
                    has_more: p.has_more,
                }
            }
        }
    )*};
}

page_from!(
    KeyPage => KeyView,
    TenantPage => TenantView,
    AuditPage => AuditEventView,
    LedgerPage => LedgerEntryView,
);
