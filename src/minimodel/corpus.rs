//! The verb corpus and its byte-level tokenizer.
//!
//! The corpus is Spanish verb conjugations (`data/verbs.txt`, written by `scripts/make_verb_corpus.py`),
//! one tense of one verb a line. Tokens are bytes: token `t` is the byte value `t`, so the vocabulary has
//! 256 entries and an accented letter (two UTF-8 bytes) is two tokens.

use super::config::VERB_SEQ_LEN;
use thiserror::Error;

/// The whole corpus, embedded in the binary.
pub const VERB_CORPUS: &str = include_str!("../../data/verbs.txt");

/// Byte offset of the verb sequence: the first line's opening, `hablar (presente): yo hablo, ...`.
pub const VERB_SEQUENCE_OFFSET: usize = 0;

/// Vocabulary size of the byte tokenizer.
pub const VOCAB_SIZE: usize = 256;

/// Why tokens could not be turned back into text or a window could not be cut.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CorpusError {
    /// A token id outside the byte vocabulary.
    #[error("token {token} at position {index} is outside the byte vocabulary (0..256)")]
    OutOfVocab {
        /// Position in the token slice.
        index: usize,
        /// The offending id.
        token: u32,
    },
    /// The bytes are not UTF-8 (for example a window that cuts an accented letter in half).
    #[error("the tokens are not valid UTF-8 (error at byte {valid_up_to})")]
    InvalidUtf8 {
        /// Length of the valid prefix.
        valid_up_to: usize,
    },
    /// A window reaching past the end of the corpus.
    #[error("window [{start}, {start}+{len}) is outside the corpus of {corpus_len} tokens")]
    OutOfRange {
        /// First token of the window.
        start: usize,
        /// Tokens asked for.
        len: usize,
        /// Tokens in the corpus.
        corpus_len: usize,
    },
}

// ANCHOR: tokenizer
/// Text to tokens: one token per UTF-8 byte.
pub fn encode(text: &str) -> Vec<u32> {
    text.bytes().map(u32::from).collect()
}

/// Tokens back to text; refuses ids above 255 and byte strings that are not UTF-8.
pub fn decode(tokens: &[u32]) -> Result<String, CorpusError> {
    let bytes = tokens
        .iter()
        .enumerate()
        .map(|(index, &token)| {
            u8::try_from(token).map_err(|_| CorpusError::OutOfVocab { index, token })
        })
        .collect::<Result<Vec<u8>, _>>()?;
    String::from_utf8(bytes).map_err(|e| CorpusError::InvalidUtf8 {
        valid_up_to: e.utf8_error().valid_up_to(),
    })
}
// ANCHOR_END: tokenizer

/// The whole corpus as tokens.
pub fn corpus_tokens() -> Vec<u32> {
    encode(VERB_CORPUS)
}

/// `len` tokens of the corpus starting at token `start`.
pub fn window(start: usize, len: usize) -> Result<Vec<u32>, CorpusError> {
    let bytes = VERB_CORPUS.as_bytes();
    match start.checked_add(len) {
        Some(end) if end <= bytes.len() => {
            Ok(bytes[start..end].iter().map(|&b| u32::from(b)).collect())
        }
        _ => Err(CorpusError::OutOfRange {
            start,
            len,
            corpus_len: bytes.len(),
        }),
    }
}

/// The verb sequence: the fixed 64-token window every N=64 measurement uses.
pub fn verb_sequence() -> Vec<u32> {
    window(VERB_SEQUENCE_OFFSET, VERB_SEQ_LEN).expect("the corpus is longer than the verb sequence")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_errors() {
        let t = encode("él habló");
        assert_eq!(t.len(), "él habló".len());
        assert_eq!(decode(&t).unwrap(), "él habló");
        assert_eq!(
            decode(&[104, 300]),
            Err(CorpusError::OutOfVocab {
                index: 1,
                token: 300
            })
        );
        assert_eq!(
            decode(&t[..1]),
            Err(CorpusError::InvalidUtf8 { valid_up_to: 0 })
        );
        assert!(matches!(
            window(usize::MAX, 2),
            Err(CorpusError::OutOfRange { .. })
        ));
    }

    #[test]
    fn verb_sequence_is_readable_and_corpus_is_large() {
        let seq = verb_sequence();
        assert_eq!(seq.len(), VERB_SEQ_LEN);
        assert!(decode(&seq)
            .unwrap()
            .starts_with("hablar (presente): yo hablo"));
        assert!(
            corpus_tokens().len() > 5_000,
            "a few thousand tokens at least"
        );
        assert!(corpus_tokens().iter().all(|&t| (t as usize) < VOCAB_SIZE));
    }
}
