//! The Feishu/Lark Open API as this tool speaks it: wire types (and, later, the client).

pub mod wire;
