//! Tokeniser for keepalived's configuration language.
//!
//! Words, `{`, `}` and line ends, each with its position. keepalived's rules: `#` and `!` start a
//! comment anywhere outside double quotes (`\#` and `\!` are literal), `"..."` groups words (with
//! `\"` and `\\` escapes), braces are tokens of their own even when glued to a word, and a
//! backslash at the end of a line continues it. On top of that, `//` at the start of a word is
//! taken as a remark to the end of the line (people paste annotated snippets), with a warning.

use std::sync::Arc;

use super::diag::{Diagnostics, Span};

/// What a token is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenKind {
    /// A word (quotes removed, escapes resolved).
    Word(String),
    /// `{`
    Open,
    /// `}`
    Close,
    /// End of a (logical) line.
    Newline,
}

/// A token and where it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    /// The token.
    pub kind: TokenKind,
    /// Its first character.
    pub span: Span,
}

/// Split `text` (the content of `file`) into tokens; problems go to `diags`.
pub fn tokenize(file: &Arc<str>, text: &str, diags: &mut Diagnostics) -> Vec<Token> {
    let mut out = Vec::new();
    let mut line: u32 = 1;
    let mut col: u32 = 0;
    let mut chars = text.chars().peekable();
    // The word being built, with its start.
    let mut word: Option<(String, Span)> = None;

    fn flush(out: &mut Vec<Token>, word: &mut Option<(String, Span)>) {
        if let Some((w, span)) = word.take() {
            out.push(Token {
                kind: TokenKind::Word(w),
                span,
            });
        }
    }

    while let Some(c) = chars.next() {
        col += 1;
        let here = Span::new(file, line, col);
        match c {
            '\n' => {
                flush(&mut out, &mut word);
                out.push(Token {
                    kind: TokenKind::Newline,
                    span: here,
                });
                line += 1;
                col = 0;
            }
            ' ' | '\t' | '\r' => flush(&mut out, &mut word),
            '#' | '!' => {
                flush(&mut out, &mut word);
                skip_to_eol(&mut chars, &mut col);
            }
            '/' if word.is_none() && chars.peek() == Some(&'/') => {
                diags.warning(
                    &here,
                    "`//` remark taken as a comment to the end of the line (keepalived comments start with # or !)",
                );
                skip_to_eol(&mut chars, &mut col);
            }
            '{' | '}' => {
                flush(&mut out, &mut word);
                let kind = if c == '{' {
                    TokenKind::Open
                } else {
                    TokenKind::Close
                };
                out.push(Token { kind, span: here });
            }
            '\\' => match chars.peek().copied() {
                Some('#') | Some('!') | Some('{') | Some('}') | Some('"') | Some('\\') => {
                    let next = chars.next().unwrap_or('\\');
                    col += 1;
                    word.get_or_insert_with(|| (String::new(), here.clone()))
                        .0
                        .push(next);
                }
                Some('\n') => {
                    // Line continuation: the logical line goes on.
                    chars.next();
                    flush(&mut out, &mut word);
                    line += 1;
                    col = 0;
                }
                Some('\r') => {
                    chars.next();
                    col += 1;
                    if chars.peek() == Some(&'\n') {
                        chars.next();
                        flush(&mut out, &mut word);
                        line += 1;
                        col = 0;
                    } else {
                        word.get_or_insert_with(|| (String::new(), here.clone()))
                            .0
                            .push('\\');
                    }
                }
                _ => word
                    .get_or_insert_with(|| (String::new(), here.clone()))
                    .0
                    .push('\\'),
            },
            '"' => {
                let w = &mut word.get_or_insert_with(|| (String::new(), here.clone())).0;
                let mut closed = false;
                while let Some(&q) = chars.peek() {
                    if q == '\n' {
                        break;
                    }
                    chars.next();
                    col += 1;
                    match q {
                        '"' => {
                            closed = true;
                            break;
                        }
                        '\\' => match chars.peek().copied() {
                            Some(e @ ('"' | '\\')) => {
                                chars.next();
                                col += 1;
                                w.push(e);
                            }
                            _ => w.push('\\'),
                        },
                        other => w.push(other),
                    }
                }
                if !closed {
                    diags.error(
                        &here,
                        "unterminated string: missing closing '\"' on this line",
                    );
                }
            }
            other => word
                .get_or_insert_with(|| (String::new(), here.clone()))
                .0
                .push(other),
        }
    }
    flush(&mut out, &mut word);
    out.push(Token {
        kind: TokenKind::Newline,
        span: Span::new(file, line, col + 1),
    });
    out
}

fn skip_to_eol(chars: &mut std::iter::Peekable<std::str::Chars<'_>>, col: &mut u32) {
    while let Some(&c) = chars.peek() {
        if c == '\n' {
            break;
        }
        chars.next();
        *col += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(text: &str) -> (Vec<TokenKind>, Diagnostics) {
        let f: Arc<str> = Arc::from("t.conf");
        let mut d = Diagnostics::default();
        let t = tokenize(&f, text, &mut d);
        (t.into_iter().map(|t| t.kind).collect(), d)
    }

    fn w(s: &str) -> TokenKind {
        TokenKind::Word(s.into())
    }

    #[test]
    fn comments_quotes_and_braces() {
        let (t, d) = words("a{b} # c\n\"x y\" ! z\nq \\# r // remark\n");
        assert_eq!(
            t,
            vec![
                w("a"),
                TokenKind::Open,
                w("b"),
                TokenKind::Close,
                TokenKind::Newline,
                w("x y"),
                TokenKind::Newline,
                w("q"),
                w("#"),
                w("r"),
                TokenKind::Newline,
                TokenKind::Newline
            ]
        );
        assert_eq!(d.0.len(), 1);
        assert_eq!(d.0[0].span.line, 3);
        assert_eq!(d.0[0].span.column, 8);
    }

    #[test]
    fn continuation_and_unterminated() {
        let (t, d) = words("a \\\n b\n\"open\n");
        assert_eq!(
            t,
            vec![
                w("a"),
                w("b"),
                TokenKind::Newline,
                w("open"),
                TokenKind::Newline,
                TokenKind::Newline
            ]
        );
        assert!(d.has_errors());
        assert_eq!(
            d.0[0].to_string(),
            "t.conf:3:1: unterminated string: missing closing '\"' on this line"
        );
    }

    #[test]
    fn slash_inside_word_is_kept() {
        let (t, d) = words("script /usr//bin/x\n");
        assert_eq!(
            t,
            vec![
                w("script"),
                w("/usr//bin/x"),
                TokenKind::Newline,
                TokenKind::Newline
            ]
        );
        assert!(d.0.is_empty());
    }
}
