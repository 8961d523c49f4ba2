//! A local stand-in for the Feishu chat-button API (see issue: emulator).
