//! The former home of the credit and idempotency records, when one
//! `LimitStore` trait held both: `keyward_store::limits::X` keeps working.
//! New code names them from the crate root; the traits are now
//! [`crate::CreditStore`] and [`crate::IdempotencyStore`].

pub use crate::credits::{
    next_boundary, ChangeOutcome, CreditAccount, CreditChange, LedgerEntry, LedgerKind, Recover,
    Refill, RefillMode, RefillPeriod, ReserveRequest, Reserved, Settlement,
};
pub use crate::idempotency::{ClaimOutcome, IdempotencyClaim, StoredResponse};
