#![doc = include_str!("../README.md")]
#![doc(test(attr(deny(warnings))))]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod error;
pub mod hub;
pub mod ws;

pub use error::{Error, Result};
pub use hub::{ClientHandle, ClientId, CloseReason, Hub, HubConfig, Mailbox, OverflowPolicy, Stats};
pub use tungstenite::Message;
pub use tungstenite::protocol::frame::coding::CloseCode;
