#![doc = include_str!("../README.md")]
#![doc(test(attr(deny(warnings))))]
// Nothing that arrives from the network may panic the library; tests may unwrap.
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod backplane;
pub mod error;
pub mod hub;
#[cfg(feature = "metrics")]
#[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
pub mod metrics;
pub mod ws;

mod sync;
mod util;

pub use error::{Error, Result, SendError};
pub use hub::{
    ClientHandle, ClientId, CloseReason, Hub, HubConfig, Mailbox, OverflowPolicy, Presence, Stats,
    TryRecvError,
};
pub use tungstenite::protocol::frame::coding::CloseCode;
pub use tungstenite::Message;
