//! Incremental Server-Sent Events splitting. Network chunks do not align with events:
//! bytes are buffered until a blank line ends an event.

use bytes::{Buf, BytesMut};

/// One parsed event.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SseEvent {
    pub event: Option<String>,
    pub id: Option<String>,
    pub data: String,
}

#[derive(Debug, Default)]
pub struct SseSplitter {
    buf: BytesMut,
    /// How far `buf` is known to hold no blank line, so a large event arriving in
    /// many chunks is scanned once, not once per chunk.
    scanned: usize,
}

impl SseSplitter {
    pub fn push(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    /// Bytes buffered but not yet returned as an event.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Takes whatever is buffered (an unfinished event), leaving the splitter empty.
    pub fn take_rest(&mut self) -> BytesMut {
        self.scanned = 0;
        self.buf.split()
    }

    fn find_end(&mut self) -> Option<(usize, usize)> {
        // A separator may straddle the previous scan's end: back up two bytes.
        match find_blank_line(&self.buf, self.scanned.saturating_sub(2)) {
            Some(found) => {
                self.scanned = 0;
                Some(found)
            }
            None => {
                self.scanned = self.buf.len();
                None
            }
        }
    }

    /// The next complete block (an event, a comment or a field-only block such as a
    /// priming event), as the raw bytes it arrived as, blank line included, and its
    /// parse (`None` when it carries no `data`).
    pub fn next_block(&mut self) -> Option<(BytesMut, Option<SseEvent>)> {
        let (end, sep) = self.find_end()?;
        let raw = self.buf.split_to(end + sep);
        let event = parse_block(&raw[..end]);
        Some((raw, event))
    }

    /// The next complete event, if the buffer holds one. Comments and events without
    /// data are skipped.
    pub fn next_event(&mut self) -> Option<SseEvent> {
        loop {
            let (end, sep) = self.find_end()?;
            let block = self.buf.split_to(end);
            self.buf.advance(sep);
            if let Some(event) = parse_block(&block) {
                return Some(event);
            }
        }
    }
}

/// The first blank line at or after `from`: (offset of the `\n` ending the last
/// line, length of the separator).
fn find_blank_line(buf: &[u8], from: usize) -> Option<(usize, usize)> {
    let mut i = from;
    while let Some(at) = memchr::memchr(b'\n', &buf[i..]) {
        i += at;
        if buf.get(i + 1) == Some(&b'\n') {
            return Some((i, 2));
        }
        if buf.get(i + 1) == Some(&b'\r') && buf.get(i + 2) == Some(&b'\n') {
            return Some((i, 3));
        }
        i += 1;
    }
    None
}

fn parse_block(block: &[u8]) -> Option<SseEvent> {
    let text = String::from_utf8_lossy(block);
    let mut event = SseEvent::default();
    let mut has_data = false;
    for line in text.lines() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.is_empty() || line.starts_with(':') {
            continue;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "data" => {
                if has_data {
                    event.data.push('\n');
                }
                event.data.push_str(value);
                has_data = true;
            }
            "event" => event.event = Some(value.to_string()),
            "id" => event.id = Some(value.to_string()),
            _ => {}
        }
    }
    has_data.then_some(event)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_events_across_arbitrary_chunks() {
        let stream = b": ping\n\nid: 1\nevent: message\ndata: {\"a\":\ndata: 1}\n\r\nid: 2\r\ndata: x\r\n\r\ndata: tail";
        for cut in 1..stream.len() {
            let mut s = SseSplitter::default();
            let mut got = Vec::new();
            for piece in stream.chunks(cut) {
                s.push(piece);
                while let Some(e) = s.next_event() {
                    got.push(e);
                }
            }
            assert_eq!(got.len(), 2, "cut {cut}");
            assert_eq!(got[0].data, "{\"a\":\n1}");
            assert_eq!(got[0].event.as_deref(), Some("message"));
            assert_eq!(got[0].id.as_deref(), Some("1"));
            assert_eq!(got[1].data, "x");
        }
    }
}
