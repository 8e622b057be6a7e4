//! Control messages: what the hub sends itself through an engine, so that
//! ending a user's or a topic's streams holds on every instance.
//!
//! A control message is an event on the default topic whose name starts
//! with [`RESERVED`] (which publishers may not use); the hub acts on it and
//! never stores or delivers it. Any program can send one through the engine
//! too (with Redis: `XADD … event tower-sse:end-user data ann`).

use crate::{event::Event, record::Message};

/// The prefix of the event names the hub keeps for itself.
pub(crate) const RESERVED: &str = "tower-sse:";

const END_USER: &str = "tower-sse:end-user";
const END_TOPIC: &str = "tower-sse:end-topic";

/// What a control message asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Control {
    /// End every stream of this user.
    EndUser(String),
    /// End every stream that follows this topic.
    EndTopic(String),
}

impl Control {
    /// The message that carries it.
    pub(crate) fn message(&self) -> Message {
        let (name, arg) = match self {
            Control::EndUser(user) => (END_USER, user),
            Control::EndTopic(topic) => (END_TOPIC, topic),
        };
        // The name and data are ours and valid: this cannot fail.
        Message::control(Event::default().event(name).data(arg))
    }

    /// The control a message carries, if it is one.
    pub(crate) fn of(message: &Message) -> Option<Control> {
        if message.topic().is_some() {
            return None;
        }
        match message.event()? {
            END_USER => Some(Control::EndUser(message.data().to_owned())),
            END_TOPIC => Some(Control::EndTopic(message.data().to_owned())),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_control_survives_being_a_message() {
        for control in [
            Control::EndUser("ann".into()),
            Control::EndTopic("room/1".into()),
        ] {
            assert_eq!(Control::of(&control.message()), Some(control));
        }
        let plain = Message::new(None, Event::default().event("end-user").data("x")).unwrap();
        assert_eq!(Control::of(&plain), None);
    }
}
