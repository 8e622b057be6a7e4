//! The WebSocket control-message parser (`subscribe` / `unsubscribe`): any
//! text is read or refused with a close code and a reason that fits a close
//! frame once cut, never a panic; what is read is read again the same.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // A text frame is UTF-8 (tungstenite refuses others before us).
    if let Ok(text) = std::str::from_utf8(data) {
        tower_sse::fuzzing::ws_control(text);
    }
});
