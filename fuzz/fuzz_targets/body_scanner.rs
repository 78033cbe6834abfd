//! The streaming body scanner against serde_json: for every input, both accept or both refuse,
//! and what they accept they read the same; fed in two chunks split anywhere, the scanner
//! gives the same answer as fed whole.
#![no_main]

use libfuzzer_sys::fuzz_target;
use objdet::body_scanner::{BodyScanner, DetectBody, scan_whole};

fuzz_target!(|data: &[u8]| {
    let ours = scan_whole(data);
    let theirs = serde_json::from_slice::<DetectBody>(data);
    match (&ours, &theirs) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "different values for {:?}", String::from_utf8_lossy(data)),
        (Err(_), Err(_)) => {}
        _ => panic!(
            "scanner {:?} vs serde_json {:?} for {:?}",
            ours.as_ref().map(|_| ()),
            theirs.as_ref().map(|_| ()),
            String::from_utf8_lossy(data)
        ),
    }
    // Chunking must not matter.
    if data.len() > 1 {
        let at = usize::from(data[0]) % data.len();
        let mut scanner = BodyScanner::new();
        let mut events = Vec::new();
        let split = scanner
            .feed(&data[..at], &mut events)
            .and_then(|()| scanner.feed(&data[at..], &mut events))
            .and_then(|()| scanner.finish());
        assert_eq!(split.is_ok(), ours.is_ok(), "chunked at {at}: {:?}", String::from_utf8_lossy(data));
    }
});
