//! Storage shared by every server of a Voca mesh: the character store that
//! holds vendors' files ([`store`]), and the hot state that pool nodes and
//! the registry share through Redis ([`hot`]).

pub mod args;
pub mod hot;
pub mod store;
