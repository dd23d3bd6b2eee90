//! Walking a list page by page, following `next_cursor`, within a bound
//! the caller sets.

use std::future::Future;

use keyward_wire::{
    ListAlerts, ListAudit, ListDeliveries, ListEndpoints, ListIps, ListKeys, ListLedger,
    ListTenants, Page, TenantUsagePage, TenantUsageQuery,
};

use crate::ClientError;

/// A list query with a cursor.
pub(crate) trait Cursor: Clone {
    fn set_cursor(&mut self, cursor: Option<String>);
}

macro_rules! cursor {
    ($($query:ty),* $(,)?) => {$(
        impl Cursor for $query {
            fn set_cursor(&mut self, cursor: Option<String>) {
                self.cursor = cursor;
            }
        }
    )*};
}

cursor!(
    ListTenants,
    ListKeys,
    ListLedger,
    ListAudit,
    ListIps,
    TenantUsageQuery,
    ListEndpoints,
    ListDeliveries,
    ListAlerts,
);

/// A page of a list, in whichever shape the operation answers.
pub(crate) trait Paged {
    fn next_cursor(&self) -> Option<&str>;
    /// This page followed by `next`: its items appended, its cursor taken.
    fn join(&mut self, next: Self);
}

impl<T> Paged for Page<T> {
    fn next_cursor(&self) -> Option<&str> {
        self.next_cursor.as_deref()
    }

    fn join(&mut self, mut next: Page<T>) {
        self.data.append(&mut next.data);
        self.next_cursor = next.next_cursor;
        self.has_more = next.has_more;
    }
}

impl Paged for TenantUsagePage {
    fn next_cursor(&self) -> Option<&str> {
        self.next_cursor.as_deref()
    }

    fn join(&mut self, mut next: TenantUsagePage) {
        self.data.append(&mut next.data);
        self.next_cursor = next.next_cursor;
        self.has_more = next.has_more;
    }
}

/// The pages of `query` from its cursor on, joined into one: at most
/// `max_pages` requests (at least one). If the bound stopped the walk,
/// the result's `next_cursor` is where to go on.
pub(crate) async fn walk<Q, P, F, Fut>(
    query: &Q,
    max_pages: usize,
    fetch: F,
) -> Result<P, ClientError>
where
    Q: Cursor,
    P: Paged,
    F: Fn(Q) -> Fut,
    Fut: Future<Output = Result<P, ClientError>>,
{
    let mut all = fetch(query.clone()).await?;
    for _ in 1..max_pages {
        let Some(cursor) = all.next_cursor().map(str::to_owned) else {
            break;
        };
        let mut q = query.clone();
        q.set_cursor(Some(cursor.clone()));
        let next = fetch(q).await?;
        if next.next_cursor() == Some(cursor.as_str()) {
            return Err(ClientError::RepeatedCursor);
        }
        all.join(next);
    }
    Ok(all)
}
