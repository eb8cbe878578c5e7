//! The `q=` text syntax: space-separated terms, all ANDed.
//!
//! ```text
//! term   := ["-"] (field ":" [op] value | "\"phrase\"" | word)
//! op     := ">" | ">=" | "<" | "<="
//! value  := "\"quoted text\"" | bare        bare ending in "*" = prefix, bare "*" = exists,
//!                                            bare with commas = any of
//! ```
//! `-` negates a term. A phrase or a bare word without a field is a case-insensitive search in `description`.
//! Example: `action:DELETED entity.type:card created_at:>now-7d -actor.id:system meta.status:error "renamed"`.

use super::{Field, Filter, Op};
use crate::error::{Error, Result};
use crate::time::Millis;

/// Parses a `q=` expression; `now` resolves relative times.
pub fn parse(input: &str, now: Millis) -> Result<Filter> {
    let chars: Vec<char> = input.chars().collect();
    let mut position = 0;
    let mut terms = Vec::new();
    loop {
        while position < chars.len() && chars[position].is_whitespace() {
            position += 1;
        }
        if position >= chars.len() {
            break;
        }
        let negated = chars[position] == '-'
            && chars
                .get(position + 1)
                .is_some_and(|next| !next.is_whitespace());
        if negated {
            position += 1;
        }
        let term = if chars[position] == '"' {
            Filter::Text(read_quoted(&chars, &mut position)?.to_lowercase())
        } else {
            let start = position;
            while position < chars.len()
                && !chars[position].is_whitespace()
                && !matches!(chars[position], ':' | '"')
            {
                position += 1;
            }
            let name: String = chars[start..position].iter().collect();
            if chars.get(position) == Some(&':') && is_field_name(&name) {
                position += 1;
                field_term(&name, &chars, &mut position, now)?
            } else {
                while position < chars.len() && !chars[position].is_whitespace() {
                    position += 1;
                }
                let word: String = chars[start..position].iter().collect();
                Filter::Text(word.to_lowercase())
            }
        };
        terms.push(if negated { term.negate() } else { term });
    }
    Ok(Filter::and(terms))
}

fn field_term(name: &str, chars: &[char], position: &mut usize, now: Millis) -> Result<Filter> {
    let field = Field::parse(name)?;
    let mut op = None;
    for (symbol, symbol_op) in [
        (">=", Op::Gte),
        ("<=", Op::Lte),
        (">", Op::Gt),
        ("<", Op::Lt),
    ] {
        let symbol_chars: Vec<char> = symbol.chars().collect();
        if chars[*position..].starts_with(&symbol_chars) {
            *position += symbol_chars.len();
            op = Some(symbol_op);
            break;
        }
    }
    let (value, quoted) = if chars.get(*position) == Some(&'"') {
        (read_quoted(chars, position)?, true)
    } else {
        let start = *position;
        while *position < chars.len() && !chars[*position].is_whitespace() {
            *position += 1;
        }
        (chars[start..*position].iter().collect::<String>(), false)
    };
    if value.is_empty() && !quoted {
        return Err(Error::invalid_filter(format!(
            "`{name}:` needs a value, like {name}:value, {name}:\"two words\", {name}:>value or {name}:prefix*"
        )));
    }
    if let Some(op) = op {
        return field.condition(op, &value, now);
    }
    if quoted {
        return field.condition(Op::Eq, &value, now);
    }
    if value == "*" {
        return field.condition(Op::Exists, "true", now);
    }
    if let Some(prefix) = value.strip_suffix('*') {
        return field.condition(Op::Prefix, prefix, now);
    }
    if value.contains(',') {
        return field.condition(Op::In, &value, now);
    }
    field.condition(Op::Eq, &value, now)
}

/// Reads `"..."` starting at the opening quote; `\"` and `\\` are escapes.
fn read_quoted(chars: &[char], position: &mut usize) -> Result<String> {
    debug_assert_eq!(chars[*position], '"');
    let opening = *position;
    *position += 1;
    let mut text = String::new();
    while *position < chars.len() {
        match chars[*position] {
            '"' => {
                *position += 1;
                return Ok(text);
            }
            '\\' if matches!(chars.get(*position + 1), Some('"' | '\\')) => {
                text.push(chars[*position + 1]);
                *position += 2;
            }
            other => {
                text.push(other);
                *position += 1;
            }
        }
    }
    Err(Error::invalid_filter(format!(
        "unterminated quote starting at character {} of `q`",
        opening + 1
    )))
}

fn is_field_name(name: &str) -> bool {
    let mut characters = name.chars();
    characters
        .next()
        .is_some_and(|first| first.is_ascii_alphabetic() || first == '_')
        && characters.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::{Condition, Operand, Predicate};

    const NOW: Millis = 1_795_341_600_000;

    fn condition(field: Field, predicate: Predicate) -> Filter {
        Filter::Condition(Condition { field, predicate })
    }

    #[test]
    fn the_example_of_the_contract() {
        let filter = parse(
            r#"action:DELETED entity.type:card created_at:>now-7d -actor.id:system meta.status:error "renamed welcome""#,
            NOW,
        )
        .unwrap();
        assert_eq!(
            filter,
            Filter::And(vec![
                condition(
                    Field::Action,
                    Predicate::Eq(Operand::Text("DELETED".into()))
                ),
                condition(
                    Field::EntityType,
                    Predicate::Eq(Operand::Text("card".into()))
                ),
                condition(
                    Field::CreatedAt,
                    Predicate::Gt(Operand::Number(NOW - 7 * 86_400_000))
                ),
                Filter::Not(Box::new(condition(
                    Field::ActorId,
                    Predicate::Eq(Operand::Text("system".into()))
                ))),
                condition(
                    Field::Metadata("status".into()),
                    Predicate::Eq(Operand::Text("error".into()))
                ),
                Filter::Text("renamed welcome".into()),
            ])
        );
    }

    #[test]
    fn prefix_exists_lists_quotes_and_words() {
        assert_eq!(
            parse("type:conversation.*", NOW).unwrap(),
            condition(Field::Type, Predicate::Prefix("conversation.".into()))
        );
        assert_eq!(
            parse("entity.id:*", NOW).unwrap(),
            condition(Field::EntityId, Predicate::Exists)
        );
        assert_eq!(
            parse("type:a,b", NOW).unwrap(),
            condition(
                Field::Type,
                Predicate::In(vec![Operand::Text("a".into()), Operand::Text("b".into())])
            )
        );
        assert_eq!(
            parse(r#"entity.name:"Welcome \"story\"""#, NOW).unwrap(),
            condition(
                Field::EntityName,
                Predicate::Eq(Operand::Text("Welcome \"story\"".into()))
            )
        );
        assert_eq!(
            parse(r#"Renamed "http://x""#, NOW).unwrap(),
            Filter::And(vec![
                Filter::Text("renamed".into()),
                Filter::Text("http://x".into()),
            ])
        );
        assert_eq!(parse("  ", NOW).unwrap(), Filter::All);
        assert_eq!(
            parse("meta.amount:>=-5", NOW).unwrap(),
            condition(
                Field::Metadata("amount".into()),
                Predicate::Gte(Operand::Text("-5".into()))
            )
        );
    }

    #[test]
    fn errors_are_explained() {
        for (input, needle) in [
            ("colour:red", "accepted fields"),
            ("type:", "needs a value"),
            ("\"open", "unterminated"),
            ("seq:>x", "whole number"),
        ] {
            let error = parse(input, NOW).unwrap_err().to_string();
            assert!(error.contains(needle), "{input}: {error}");
        }
    }
}
