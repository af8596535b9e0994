//! rollwave agent (in progress).
