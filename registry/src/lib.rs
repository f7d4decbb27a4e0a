//! Vendor registry service. It has no functionality yet: the mesh reads vendors straight from the character store.
