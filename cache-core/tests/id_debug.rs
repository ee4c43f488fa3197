//! ID-3: `{:?}` of an ID shows what identifies the call — field, argument
//! names and non-sensitive values, the receiver's digest — and a marker in
//! place of each sensitive value, never the value itself.

use cache_core::id::{CallId, Literal};

#[test]
fn id3_debug_shows_the_call_and_redacts_sensitive_values() {
    let receiver = CallId::new("container");
    let id = receiver
        .with_receiver(receiver.clone())
        .with_arg("image", Literal::String("alpine:3".into()))
        .with_sensitive_arg("password", Literal::String("hunter2-secret".into()));
    let shown = format!("{id:?}");
    assert!(!shown.contains("hunter2-secret"), "secret leaked: {shown}");
    for part in [
        "CallId",
        "container",
        "image",
        "alpine:3",
        "password",
        "<redacted>",
    ] {
        assert!(shown.contains(part), "Debug lacks {part:?}: {shown}");
    }
    // The receiver appears by its digest, not as a whole nested ID.
    assert_eq!(shown.matches("CallId").count(), 1, "{shown}");
}
