//! The relay through its real HTTP server and, in server mode, against a small fake
//! control plane of real sockets.

mod kit;

mod follow;
mod ofrep;
mod selection;
mod standalone;
