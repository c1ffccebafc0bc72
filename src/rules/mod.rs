//! The ruleset engine (S/R lines) and address test mode (-bt).
