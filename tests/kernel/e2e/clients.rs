//! fencebridge's own test clients (`examples/clients`) against the reference compositor.
