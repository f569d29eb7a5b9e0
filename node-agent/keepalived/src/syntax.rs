//! The generic block structure of a keepalived.conf: statements (a keyword, its arguments on
//! the same line, and an optional `{ ... }` block), with `include` expanded in place.
//!
//! Knows nothing about VRRP; [`super::parser`] gives the statements meaning.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::diag::{Diagnostics, Span};
use super::lexer::{Token, TokenKind, tokenize};

/// One statement: `keyword arg arg ... [{ statements }]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// First word of the statement.
    pub keyword: String,
    /// Where the keyword is.
    pub span: Span,
    /// The other words on the line, each with its position.
    pub args: Vec<(String, Span)>,
    /// The block, when the statement has one.
    pub block: Option<Block>,
}

/// A `{ ... }` block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    /// Where `{` is.
    pub open: Span,
    /// The statements inside.
    pub nodes: Vec<Node>,
}

/// Where included files come from: the real file system, or a map (tests, fuzzing).
pub trait FileSource {
    /// The files a pattern names, sorted; a pattern without wildcards names itself.
    fn expand(&self, pattern: &Path) -> Result<Vec<PathBuf>, String>;
    /// A file's text.
    fn read(&self, path: &Path) -> Result<String, String>;
}

/// Largest configuration file read (keepalived configs are a few KiB; this stops `/dev/zero`).
pub const MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;
/// Deepest include chain (a file including itself stops here).
pub const MAX_INCLUDE_DEPTH: usize = 16;
/// Deepest block nesting.
pub const MAX_BLOCK_DEPTH: usize = 64;
/// Most files read through `include` for one configuration (stops a file that includes itself
/// several times from multiplying without bound).
pub const MAX_INCLUDED_FILES: usize = 256;

/// The real file system, with glob patterns.
#[derive(Debug, Clone, Copy, Default)]
pub struct RealFs;

fn has_wildcards(p: &Path) -> bool {
    p.to_string_lossy()
        .chars()
        .any(|c| matches!(c, '*' | '?' | '['))
}

impl FileSource for RealFs {
    fn expand(&self, pattern: &Path) -> Result<Vec<PathBuf>, String> {
        if !has_wildcards(pattern) {
            return Ok(vec![pattern.to_path_buf()]);
        }
        let text = pattern
            .to_str()
            .ok_or_else(|| "the pattern is not valid UTF-8".to_string())?;
        let paths = glob::glob(text).map_err(|e| format!("bad pattern: {e}"))?;
        let mut out: Vec<PathBuf> = paths.filter_map(Result::ok).collect();
        out.sort();
        Ok(out)
    }

    fn read(&self, path: &Path) -> Result<String, String> {
        let meta = std::fs::metadata(path).map_err(|e| e.to_string())?;
        if !meta.is_file() {
            return Err("not a regular file".into());
        }
        if meta.len() > MAX_FILE_BYTES {
            return Err(format!("larger than {MAX_FILE_BYTES} bytes"));
        }
        let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
        String::from_utf8(bytes).map_err(|_| "not valid UTF-8 text".to_string())
    }
}

/// Files held in memory, keyed by path (for tests and the fuzzer).
#[derive(Debug, Clone, Default)]
pub struct MemFs(pub BTreeMap<PathBuf, String>);

impl FileSource for MemFs {
    fn expand(&self, pattern: &Path) -> Result<Vec<PathBuf>, String> {
        if !has_wildcards(pattern) {
            return Ok(vec![pattern.to_path_buf()]);
        }
        let text = pattern
            .to_str()
            .ok_or_else(|| "the pattern is not valid UTF-8".to_string())?;
        let pat = glob::Pattern::new(text).map_err(|e| format!("bad pattern: {e}"))?;
        Ok(self
            .0
            .keys()
            .filter(|k| pat.matches_path(k))
            .cloned()
            .collect())
    }

    fn read(&self, path: &Path) -> Result<String, String> {
        self.0
            .get(path)
            .cloned()
            .ok_or_else(|| "No such file or directory".to_string())
    }
}

/// Read the statements of `text` (named `file`), expanding includes through `fs`.
pub fn parse_tree(
    file: &str,
    text: &str,
    fs: &dyn FileSource,
    diags: &mut Diagnostics,
) -> Vec<Node> {
    let mut budget = MAX_INCLUDED_FILES;
    parse_tree_at(file, text, fs, diags, 0, &mut budget)
}

fn parse_tree_at(
    file: &str,
    text: &str,
    fs: &dyn FileSource,
    diags: &mut Diagnostics,
    depth: usize,
    budget: &mut usize,
) -> Vec<Node> {
    let name: Arc<str> = Arc::from(file);
    let toks = tokenize(&name, text, diags);
    let mut p = TreeParser {
        toks,
        pos: 0,
        fs,
        include_depth: depth,
        budget,
    };
    p.seq(None, 0, diags)
}

struct TreeParser<'a> {
    toks: Vec<Token>,
    pos: usize,
    fs: &'a dyn FileSource,
    include_depth: usize,
    budget: &'a mut usize,
}

impl TreeParser<'_> {
    fn peek(&self) -> Option<&Token> {
        self.toks.get(self.pos)
    }

    /// Statements until the `}` matching `open` (or the end of the file at the top level).
    fn seq(&mut self, open: Option<&Span>, depth: usize, diags: &mut Diagnostics) -> Vec<Node> {
        let mut nodes = Vec::new();
        loop {
            let Some(tok) = self.peek().cloned() else {
                if let Some(o) = open {
                    diags.error(o, "unbalanced braces: this '{' is never closed");
                }
                return nodes;
            };
            match tok.kind {
                TokenKind::Newline => self.pos += 1,
                TokenKind::Close => {
                    self.pos += 1;
                    if open.is_some() {
                        return nodes;
                    }
                    diags.error(&tok.span, "unbalanced braces: '}' without a matching '{'");
                }
                TokenKind::Open => {
                    self.pos += 1;
                    diags.error(&tok.span, "'{' without a keyword before it");
                    let _ = self.block_body(&tok.span, depth, diags);
                }
                TokenKind::Word(w) => {
                    self.pos += 1;
                    self.statement(w, tok.span, depth, diags, &mut nodes);
                }
            }
        }
    }

    fn block_body(&mut self, open: &Span, depth: usize, diags: &mut Diagnostics) -> Vec<Node> {
        if depth + 1 >= MAX_BLOCK_DEPTH {
            diags.error(
                open,
                format!("blocks nested more than {MAX_BLOCK_DEPTH} deep"),
            );
            // Skip to the matching brace without recursing.
            let mut level = 1usize;
            while let Some(t) = self.peek() {
                match t.kind {
                    TokenKind::Open => level += 1,
                    TokenKind::Close => level -= 1,
                    _ => {}
                }
                self.pos += 1;
                if level == 0 {
                    return Vec::new();
                }
            }
            diags.error(open, "unbalanced braces: this '{' is never closed");
            return Vec::new();
        }
        self.seq(Some(open), depth + 1, diags)
    }

    fn statement(
        &mut self,
        keyword: String,
        span: Span,
        depth: usize,
        diags: &mut Diagnostics,
        out: &mut Vec<Node>,
    ) {
        let mut args = Vec::new();
        while let Some(Token {
            kind: TokenKind::Word(w),
            span,
        }) = self.peek()
        {
            args.push((w.clone(), span.clone()));
            self.pos += 1;
        }
        // A block may open on the same line or on a following one.
        let mut look = self.pos;
        while matches!(
            self.toks.get(look),
            Some(Token {
                kind: TokenKind::Newline,
                ..
            })
        ) {
            look += 1;
        }
        let block = match self.toks.get(look) {
            Some(Token {
                kind: TokenKind::Open,
                span: open,
            }) => {
                let open = open.clone();
                self.pos = look + 1;
                let nodes = self.block_body(&open, depth, diags);
                Some(Block { open, nodes })
            }
            _ => None,
        };
        if keyword == "include" && block.is_none() {
            self.include(&span, &args, diags, out);
            return;
        }
        out.push(Node {
            keyword,
            span,
            args,
            block,
        });
    }

    fn include(
        &mut self,
        span: &Span,
        args: &[(String, Span)],
        diags: &mut Diagnostics,
        out: &mut Vec<Node>,
    ) {
        let [(pattern, pspan)] = args else {
            diags.error(span, "include needs exactly one file name or glob pattern");
            return;
        };
        if self.include_depth + 1 > MAX_INCLUDE_DEPTH {
            diags.error(span, format!("includes nested more than {MAX_INCLUDE_DEPTH} deep (does a file include itself?)"));
            return;
        }
        let base = Path::new(&*span.file).parent().unwrap_or(Path::new(""));
        let full = base.join(pattern);
        let files = match self.fs.expand(&full) {
            Ok(f) => f,
            Err(e) => {
                diags.error(pspan, format!("include {pattern:?}: {e}"));
                return;
            }
        };
        if files.is_empty() {
            diags.warning(pspan, format!("include {pattern:?} matches no file"));
        }
        for f in files {
            let shown = f.display().to_string();
            if *self.budget == 0 {
                diags.error(
                    pspan,
                    format!("more than {MAX_INCLUDED_FILES} files included; {shown} is not read"),
                );
                return;
            }
            *self.budget -= 1;
            match self.fs.read(&f) {
                Ok(text) => {
                    let depth = self.include_depth + 1;
                    let nodes = parse_tree_at(&shown, &text, self.fs, diags, depth, self.budget);
                    out.extend(nodes);
                }
                Err(e) => diags.error(pspan, format!("cannot read included file {shown}: {e}")),
            }
        }
    }
}
