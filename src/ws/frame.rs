//! Server-to-client frame encoding, straight from a shared `Message` into a write buffer.
//!
//! Server frames are never masked (RFC 6455 §5.1), so the encoding of a message is the same
//! for every client: a 2–10 byte header and the payload. Encoding from a borrowed message
//! avoids touching the payload's reference count per client.

use tungstenite::Message;

/// Appends `msg` as one final frame to `out`. Returns false (and appends nothing) for what
/// is not sent this way: close frames, raw frames, and control frames over 125 bytes.
pub(crate) fn encode(msg: &Message, out: &mut Vec<u8>) -> bool {
    let (opcode, payload): (u8, &[u8]) = match msg {
        Message::Text(t) => (0x1, t.as_bytes()),
        Message::Binary(b) => (0x2, b),
        Message::Ping(p) if p.len() <= 125 => (0x9, p),
        Message::Pong(p) if p.len() <= 125 => (0xA, p),
        _ => return false,
    };
    let len = payload.len();
    out.reserve(len + 10);
    out.push(0x80 | opcode); // FIN + opcode
    if len < 126 {
        out.push(len as u8);
    } else if let Ok(len) = u16::try_from(len) {
        out.push(126);
        out.extend_from_slice(&len.to_be_bytes());
    } else {
        out.push(127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(payload);
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;
    use tungstenite::protocol::frame::coding::{Data, OpCode};
    use tungstenite::protocol::frame::FrameHeader;

    fn roundtrip(msg: Message, opcode: OpCode) {
        let mut out = Vec::new();
        assert!(encode(&msg, &mut out));
        let mut cursor = Cursor::new(&out[..]);
        let (header, len) = FrameHeader::parse(&mut cursor).unwrap().unwrap();
        assert!(header.is_final);
        assert_eq!(header.opcode, opcode);
        assert!(header.mask.is_none(), "server frames are not masked");
        let start = cursor.position() as usize;
        assert_eq!(len as usize, out.len() - start);
        assert_eq!(&out[start..], msg.into_data().as_ref());
    }

    #[test]
    fn every_length_encoding_parses_back() {
        for len in [0, 1, 125, 126, 127, 65_535, 65_536, 100_000] {
            roundtrip(
                Message::text("é".repeat(len / 2) + &"x".repeat(len % 2)),
                OpCode::Data(Data::Text),
            );
            roundtrip(Message::binary(vec![7u8; len]), OpCode::Data(Data::Binary));
        }
    }

    #[test]
    fn control_frames_within_125_bytes_only() {
        use tungstenite::protocol::frame::coding::Control;
        roundtrip(
            Message::Ping(vec![1u8; 125].into()),
            OpCode::Control(Control::Ping),
        );
        roundtrip(
            Message::Pong(vec![2u8; 3].into()),
            OpCode::Control(Control::Pong),
        );
        let mut out = Vec::new();
        assert!(!encode(&Message::Ping(vec![0u8; 126].into()), &mut out));
        assert!(!encode(&Message::Close(None), &mut out));
        assert!(out.is_empty());
    }
}
