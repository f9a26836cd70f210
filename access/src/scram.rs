//! TODO(issue 6): scram
