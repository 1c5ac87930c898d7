//! The selector's lexer and parser: a recursive-descent parser with one
//! token of lookahead, mirroring the structure of Kubernetes' parser so
//! that the accepted language is the same.

use super::validate::{validate_key, validate_values, Quoted};
use super::{Operator, Requirement, SelectorError};

/// Tokens borrow from the input, so lexing allocates nothing. `in` and `notin` are plain
/// identifiers here: the parser gives them their keyword meaning only in operator position,
/// which is exactly the context-dependence of the Kubernetes lexer/parser pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Token<'a> {
    Ident(&'a str),
    OpenParen,
    CloseParen,
    Comma,
    Bang,
    Equals,
    DoubleEquals,
    NotEquals,
    GreaterThan,
    LessThan,
    End,
}

impl<'a> Token<'a> {
    /// The text of the token, for error messages (empty at the end of the input, as in Go).
    fn text(self) -> &'a str {
        match self {
            Token::Ident(s) => s,
            Token::OpenParen => "(",
            Token::CloseParen => ")",
            Token::Comma => ",",
            Token::Bang => "!",
            Token::Equals => "=",
            Token::DoubleEquals => "==",
            Token::NotEquals => "!=",
            Token::GreaterThan => ">",
            Token::LessThan => "<",
            Token::End => "",
        }
    }
}

/// A token and the byte offset where it starts, so errors can say where the problem is.
#[derive(Debug, Clone, Copy)]
pub(super) struct Spanned<'a> {
    token: Token<'a>,
    at: usize,
}

pub(super) fn is_whitespace(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

pub(super) fn is_special(b: u8) -> bool {
    matches!(b, b'=' | b'!' | b'(' | b')' | b',' | b'>' | b'<')
}

pub(super) struct Lexer<'a> {
    input: &'a str,
    pos: usize,
}

impl<'a> Lexer<'a> {
    fn next_token(&mut self) -> Spanned<'a> {
        let bytes = self.input.as_bytes();
        while bytes.get(self.pos).copied().is_some_and(is_whitespace) {
            self.pos += 1;
        }
        let at = self.pos;
        let Some(&first) = bytes.get(at) else {
            return Spanned {
                token: Token::End,
                at,
            };
        };
        let (token, len) = if is_special(first) {
            special_symbol(first, bytes.get(at + 1).copied())
        } else {
            let len = bytes[at..]
                .iter()
                .position(|&b| is_whitespace(b) || is_special(b))
                .unwrap_or(bytes.len() - at);
            // Both ends of the slice sit at the input's end or next to an ASCII byte, hence on
            // char boundaries: slicing cannot panic even for non-ASCII input.
            (Token::Ident(&self.input[at..at + len]), len)
        };
        self.pos = at + len;
        Spanned { token, at }
    }
}

/// Longest match among the symbol tokens, like Go's `scanSpecialSymbol`: only `!=` and `==` are
/// two characters long, so one byte of lookahead is enough (`===` lexes as `==`, `=`).
pub(super) fn special_symbol<'a>(first: u8, second: Option<u8>) -> (Token<'a>, usize) {
    match (first, second) {
        (b'!', Some(b'=')) => (Token::NotEquals, 2),
        (b'=', Some(b'=')) => (Token::DoubleEquals, 2),
        (b'!', _) => (Token::Bang, 1),
        (b'=', _) => (Token::Equals, 1),
        (b'(', _) => (Token::OpenParen, 1),
        (b')', _) => (Token::CloseParen, 1),
        (b',', _) => (Token::Comma, 1),
        (b'>', _) => (Token::GreaterThan, 1),
        _ => (Token::LessThan, 1),
    }
}

// ---------------------------------------------------------------------------------------------
// The parser: a recursive-descent parser with one token of lookahead, mirroring the structure of
// Kubernetes' parser so that the accepted language is the same.

pub(super) struct Parser<'a> {
    lexer: Lexer<'a>,
    peeked: Option<Spanned<'a>>,
}

impl<'a> Parser<'a> {
    pub(super) fn new(input: &'a str) -> Self {
        Parser {
            lexer: Lexer { input, pos: 0 },
            peeked: None,
        }
    }

    fn peek(&mut self) -> Spanned<'a> {
        match self.peeked {
            Some(token) => token,
            None => {
                let token = self.lexer.next_token();
                self.peeked = Some(token);
                token
            }
        }
    }

    fn bump(&mut self) -> Spanned<'a> {
        match self.peeked.take() {
            Some(token) => token,
            None => self.lexer.next_token(),
        }
    }

    pub(super) fn parse_selector(&mut self) -> Result<Vec<Requirement>, SelectorError> {
        let mut requirements = Vec::new();
        let first = self.peek();
        match first.token {
            Token::End => return Ok(requirements),
            Token::Ident(_) | Token::Bang => {}
            _ => {
                return Err(SelectorError::new(unexpected(
                    first,
                    "'!', identifier, or end of string",
                )))
            }
        }
        loop {
            let requirement = self.parse_requirement().map_err(|reason| {
                SelectorError::new(format!("unable to parse requirement: {reason}"))
            })?;
            requirements.push(requirement);
            let separator = self.bump();
            match separator.token {
                Token::End => return Ok(requirements),
                Token::Comma => {
                    let next = self.peek();
                    if !matches!(next.token, Token::Ident(_) | Token::Bang) {
                        return Err(SelectorError::new(unexpected(next, "identifier after ','")));
                    }
                }
                _ => {
                    return Err(SelectorError::new(unexpected(
                        separator,
                        "',' or end of string",
                    )))
                }
            }
        }
    }

    /// One requirement; the error is the bare reason, the caller adds context.
    fn parse_requirement(&mut self) -> Result<Requirement, String> {
        let mut token = self.bump();
        let negated = token.token == Token::Bang;
        if negated {
            token = self.bump();
        }
        let Token::Ident(key) = token.token else {
            return Err(unexpected(token, "identifier"));
        };
        validate_key(key)?;
        // `!key` never takes an operator: whatever follows is the caller's problem (Kubernetes
        // reports it as "expected ',' or end of string").
        if negated {
            return Ok(unary(key, Operator::DoesNotExist));
        }
        if matches!(self.peek().token, Token::End | Token::Comma) {
            return Ok(unary(key, Operator::Exists));
        }
        let operator = self.parse_operator()?;
        let mut values = match operator {
            Operator::In | Operator::NotIn => self.parse_value_set()?,
            _ => vec![self.parse_exact_value()?],
        };
        validate_values(key, &operator, &values)?;
        values.sort_unstable();
        values.dedup();
        Ok(Requirement {
            key: key.to_owned(),
            operator,
            values: values.into_iter().map(str::to_owned).collect(),
        })
    }

    fn parse_operator(&mut self) -> Result<Operator, String> {
        let token = self.bump();
        Ok(match token.token {
            Token::Ident("in") => Operator::In,
            Token::Ident("notin") => Operator::NotIn,
            Token::Equals | Token::DoubleEquals => Operator::Equals,
            Token::NotEquals => Operator::NotEquals,
            Token::GreaterThan => Operator::GreaterThan,
            Token::LessThan => Operator::LessThan,
            _ => {
                return Err(unexpected(
                    token,
                    "'=', '==', '!=', 'in', 'notin', '>' or '<'",
                ))
            }
        })
    }

    /// `(v1,v2)`. As in Kubernetes, `()` and empty entries (`(,a)`, `(a,)`, `(a,,b)`) denote the
    /// empty-string value, so the set is never empty.
    fn parse_value_set(&mut self) -> Result<Vec<&'a str>, String> {
        let open = self.bump();
        if open.token != Token::OpenParen {
            return Err(unexpected(open, "'('"));
        }
        let mut values = Vec::new();
        let first = self.peek();
        match first.token {
            Token::CloseParen => {
                self.bump();
                values.push("");
                return Ok(values);
            }
            Token::Ident(_) | Token::Comma => {}
            _ => return Err(unexpected(first, "',', ')' or identifier")),
        }
        loop {
            let token = self.bump();
            match token.token {
                Token::Ident(value) => {
                    values.push(value);
                    let next = self.peek();
                    match next.token {
                        Token::Comma => {}
                        Token::CloseParen => break,
                        _ => return Err(unexpected(next, "',' or ')'")),
                    }
                }
                Token::Comma => {
                    if values.is_empty() {
                        values.push("");
                    }
                    match self.peek().token {
                        Token::CloseParen => {
                            values.push("");
                            break;
                        }
                        Token::Comma => {
                            self.bump();
                            values.push("");
                        }
                        _ => {}
                    }
                }
                _ => return Err(unexpected(token, "',' or identifier")),
            }
        }
        self.bump(); // the ')' that ended the loop
        Ok(values)
    }

    /// The single value after `=`, `==`, `!=`, `>`, `<`; nothing at all (`key=`) is the empty
    /// string.
    fn parse_exact_value(&mut self) -> Result<&'a str, String> {
        let token = self.peek();
        match token.token {
            Token::End | Token::Comma => Ok(""),
            Token::Ident(value) => {
                self.bump();
                Ok(value)
            }
            _ => Err(unexpected(token, "identifier")),
        }
    }
}

pub(super) fn unary(key: &str, operator: Operator) -> Requirement {
    Requirement {
        key: key.to_owned(),
        operator,
        values: Vec::new(),
    }
}

/// `found 'x' at position N, expected: ...`, in the spirit of the Kubernetes messages.
pub(super) fn unexpected(found: Spanned<'_>, expected: &str) -> String {
    format!(
        "found {} at position {}, expected: {expected}",
        Quoted(found.token.text()),
        found.at
    )
}
