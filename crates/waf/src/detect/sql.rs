//! SQL tokenizer stub.
