//! Splits a SQL string into its statements.
//!
//! libSQL's `prepare` silently ignores everything after the first statement,
//! so `"INSERT ...; DROP TABLE t"` would run half of what the caller sent.
//! This is the tokenizer state machine of SQLite's `sqlite3_complete()`
//! (quotes, comments, and `CREATE TRIGGER ... BEGIN ...; END` bodies), run
//! once over the text in linear time, cutting at each statement end.

#[derive(Clone, Copy)]
enum Token {
    Semi,
    Space,
    Other,
    Explain,
    Create,
    Temp,
    Trigger,
    End,
}

// States: 0 invalid, 1 start, 2 normal, 3 explain, 4 create, 5 trigger, 6 semi, 7 end.
// Rows are states, columns the tokens in `Token` order.
const TRANSITIONS: [[u8; 8]; 8] = [
    [1, 0, 2, 3, 4, 2, 2, 2],
    [1, 1, 2, 3, 4, 2, 2, 2],
    [1, 2, 2, 2, 2, 2, 2, 2],
    [1, 3, 3, 2, 4, 2, 2, 2],
    [1, 4, 2, 2, 2, 4, 5, 2],
    [6, 5, 5, 5, 5, 5, 5, 5],
    [6, 6, 5, 5, 5, 5, 5, 7],
    [1, 7, 5, 5, 5, 5, 5, 5],
];

/// The statements of `sql`, trimmed, without empty ones.
pub fn split_statements(sql: &str) -> Vec<&str> {
    let bytes = sql.as_bytes();
    let mut statements = Vec::new();
    let mut state = 0u8;
    let mut start = 0usize;
    let mut pos = 0usize;
    while pos < bytes.len() {
        let (token, next) = next_token(bytes, pos);
        let before = state;
        state = TRANSITIONS[state as usize][token as usize];
        pos = next;
        if matches!(token, Token::Semi) && state == 1 {
            if before > 1 {
                statements.push(sql[start..pos].trim());
            }
            start = pos;
        }
    }
    if state > 1 {
        statements.push(sql[start..].trim());
    }
    statements
}

fn next_token(bytes: &[u8], pos: usize) -> (Token, usize) {
    let rest = &bytes[pos..];
    match rest[0] {
        b';' => (Token::Semi, pos + 1),
        b' ' | b'\t' | b'\n' | b'\r' | b'\x0c' => (Token::Space, pos + 1),
        b'/' if rest.get(1) == Some(&b'*') => {
            let end = find(&rest[2..], b"*/").map_or(bytes.len(), |i| pos + 2 + i + 2);
            (Token::Space, end)
        }
        b'-' if rest.get(1) == Some(&b'-') => {
            let end = rest
                .iter()
                .position(|&b| b == b'\n')
                .map_or(bytes.len(), |i| pos + i + 1);
            (Token::Space, end)
        }
        b'[' => (Token::Other, close_at(bytes, pos, b']')),
        quote @ (b'\'' | b'"' | b'`') => (Token::Other, close_at(bytes, pos, quote)),
        b if is_word_byte(b) => {
            let len = rest.iter().take_while(|&&b| is_word_byte(b)).count();
            (keyword(&rest[..len]), pos + len)
        }
        _ => (Token::Other, pos + 1),
    }
}

fn close_at(bytes: &[u8], open: usize, close: u8) -> usize {
    bytes[open + 1..]
        .iter()
        .position(|&b| b == close)
        .map_or(bytes.len(), |i| open + 1 + i + 1)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80
}

fn keyword(word: &[u8]) -> Token {
    let lower = word.to_ascii_lowercase();
    match lower.as_slice() {
        b"explain" => Token::Explain,
        b"create" => Token::Create,
        b"temp" | b"temporary" => Token::Temp,
        b"trigger" => Token::Trigger,
        b"end" => Token::End,
        _ => Token::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::split_statements as split;

    #[test]
    fn splits_plain_statements_and_drops_empty_ones() {
        assert_eq!(split("SELECT 1; SELECT 2"), ["SELECT 1;", "SELECT 2"]);
        assert_eq!(split(" ;; SELECT 1 ;  "), ["SELECT 1 ;"]);
        assert!(split("  -- only a comment\n /* and another */ ").is_empty());
    }

    #[test]
    fn semicolons_inside_quotes_and_comments_do_not_split() {
        assert_eq!(
            split("SELECT 'a;b', \"c;d\", [e;f], `g;h`"),
            ["SELECT 'a;b', \"c;d\", [e;f], `g;h`"]
        );
        assert_eq!(
            split("SELECT 1 -- x; y\n; SELECT /* ; */ 2"),
            ["SELECT 1 -- x; y\n;", "SELECT /* ; */ 2"]
        );
        assert_eq!(split("SELECT 'it''s; fine'"), ["SELECT 'it''s; fine'"]);
    }

    #[test]
    fn trigger_bodies_stay_whole() {
        let sql = "CREATE TRIGGER t AFTER INSERT ON x BEGIN UPDATE y SET n = n + 1; DELETE FROM z; END; SELECT 1";
        assert_eq!(
            split(sql),
            [
                "CREATE TRIGGER t AFTER INSERT ON x BEGIN UPDATE y SET n = n + 1; DELETE FROM z; END;",
                "SELECT 1"
            ]
        );
        let temp = "create temp trigger t after delete on x begin select 1; end";
        assert_eq!(split(temp), [temp]);
    }

    #[test]
    fn unterminated_quotes_swallow_the_rest() {
        assert_eq!(split("SELECT 'oops; SELECT 2"), ["SELECT 'oops; SELECT 2"]);
    }
}
