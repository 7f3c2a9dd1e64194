//! Queries behind Tempo's tag endpoints: attribute names by scope and their values.
