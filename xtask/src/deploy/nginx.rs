//! The nginx template: a small parser for nginx's configuration syntax,
//! the forward-auth wiring rules, and `nginx -t` on a templated copy when
//! nginx is installed.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use anyhow::{Context as _, Result};

use super::run_captured;

/// The nginx template's placeholders and the values a check fills in.
const NGINX_PLACEHOLDERS: [(&str, &str); 3] = [
    ("LISTEN", "127.0.0.1:18000"),
    ("SESSION_PUBLIC_UPSTREAM", "127.0.0.1:18080"),
    ("APP_UPSTREAM", "127.0.0.1:18090"),
];

/// One nginx directive: its name, arguments (quotes removed) and block.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Directive {
    name: String,
    args: Vec<String>,
    block: Option<Vec<Directive>>,
}

#[derive(Debug, PartialEq, Eq)]
enum Token {
    Word(String),
    Semicolon,
    Open,
    Close,
}

fn tokenize(text: &str) -> Result<Vec<Token>, String> {
    let mut tokens = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(&c) = chars.peek() {
        match c {
            c if c.is_whitespace() => {
                chars.next();
            }
            '#' => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        break;
                    }
                }
            }
            ';' | '{' | '}' => {
                chars.next();
                tokens.push(match c {
                    ';' => Token::Semicolon,
                    '{' => Token::Open,
                    _ => Token::Close,
                });
            }
            '"' | '\'' => {
                chars.next();
                let mut word = String::new();
                loop {
                    match chars.next() {
                        None => return Err("an unterminated quoted string".to_owned()),
                        Some('\\') => {
                            if let Some(escaped) = chars.next() {
                                word.push('\\');
                                word.push(escaped);
                            }
                        }
                        Some(q) if q == c => break,
                        Some(other) => word.push(other),
                    }
                }
                tokens.push(Token::Word(word));
            }
            _ => {
                let mut word = String::new();
                while let Some(&c) = chars.peek() {
                    if c.is_whitespace() || matches!(c, ';' | '{' | '}') {
                        break;
                    }
                    // `${NAME}` stays one word.
                    if c == '$' {
                        word.push(c);
                        chars.next();
                        if chars.peek() == Some(&'{') {
                            for c in chars.by_ref() {
                                word.push(c);
                                if c == '}' {
                                    break;
                                }
                            }
                        }
                        continue;
                    }
                    word.push(c);
                    chars.next();
                }
                tokens.push(Token::Word(word));
            }
        }
    }
    Ok(tokens)
}

fn parse_nginx(text: &str) -> Result<Vec<Directive>, String> {
    fn block(
        tokens: &mut std::iter::Peekable<std::vec::IntoIter<Token>>,
        nested: bool,
    ) -> Result<Vec<Directive>, String> {
        let mut directives = Vec::new();
        loop {
            let name = match tokens.next() {
                None if nested => return Err("a block is not closed".to_owned()),
                None => return Ok(directives),
                Some(Token::Close) if nested => return Ok(directives),
                Some(Token::Word(word)) => word,
                Some(other) => return Err(format!("unexpected {other:?}")),
            };
            let mut args = Vec::new();
            loop {
                match tokens.next() {
                    Some(Token::Word(word)) => args.push(word),
                    Some(Token::Semicolon) => {
                        directives.push(Directive {
                            name,
                            args,
                            block: None,
                        });
                        break;
                    }
                    Some(Token::Open) => {
                        let inner = block(tokens, true)?;
                        directives.push(Directive {
                            name,
                            args,
                            block: Some(inner),
                        });
                        break;
                    }
                    Some(Token::Close) | None => {
                        return Err(format!("directive {name} does not end with ; or {{"));
                    }
                }
            }
        }
    }
    let mut tokens = tokenize(text)?.into_iter().peekable();
    block(&mut tokens, false)
}

impl Directive {
    fn children(&self) -> &[Directive] {
        self.block.as_deref().unwrap_or(&[])
    }

    fn has(&self, name: &str, args: &[&str]) -> bool {
        self.children()
            .iter()
            .any(|d| d.name == name && d.args.iter().map(String::as_str).eq(args.iter().copied()))
    }

    fn first(&self, name: &str) -> Option<&Directive> {
        self.children().iter().find(|d| d.name == name)
    }

    /// The header names set by this block's own `proxy_set_header`s, lower case.
    fn set_headers(&self) -> BTreeSet<String> {
        self.children()
            .iter()
            .filter(|d| d.name == "proxy_set_header")
            .filter_map(|d| d.args.first())
            .map(|h| h.to_ascii_lowercase())
            .collect()
    }

    fn locations(&self) -> Vec<&Directive> {
        let mut found = Vec::new();
        for child in self.children() {
            if child.name == "location" {
                found.push(child);
                found.extend(child.locations());
            }
        }
        found
    }
}

/// Fills in the placeholders, and nothing else (nginx's own `$variables`
/// stay), as `envsubst '${LISTEN} ...'` does.
fn template_nginx(text: &str) -> String {
    NGINX_PLACEHOLDERS
        .iter()
        .fold(text.to_owned(), |out, (name, value)| {
            out.replace(&format!("${{{name}}}"), value)
        })
}

/// Names written as `${NAME}` in `text`.
fn placeholders(text: &str) -> BTreeSet<String> {
    text.split("${")
        .skip(1)
        .filter_map(|rest| rest.split_once('}').map(|(name, _)| name.to_owned()))
        .collect()
}

pub(super) fn check_nginx_template(auth_conf: &str, nginx_conf: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let expected: BTreeSet<String> = NGINX_PLACEHOLDERS
        .iter()
        .map(|(n, _)| (*n).to_owned())
        .collect();
    let found = placeholders(auth_conf);
    if found != expected {
        problems.push(format!(
            "session-auth.conf placeholders are {found:?}, expected exactly {expected:?}"
        ));
    }
    match parse_nginx(nginx_conf) {
        Ok(main) => {
            let includes = main
                .iter()
                .filter(|d| d.name == "http")
                .any(|http| http.has("include", &["session-auth.conf"]));
            if !includes {
                problems
                    .push("nginx.conf does not include session-auth.conf in http {}".to_owned());
            }
        }
        Err(error) => problems.push(format!("nginx.conf does not parse: {error}")),
    }
    let top = match parse_nginx(auth_conf) {
        Ok(top) => top,
        Err(error) => {
            problems.push(format!("session-auth.conf does not parse: {error}"));
            return problems;
        }
    };
    let servers: Vec<&Directive> = top.iter().filter(|d| d.name == "server").collect();
    if servers.is_empty() {
        problems.push("session-auth.conf has no server block".to_owned());
    }
    for server in servers {
        check_nginx_server(server, &mut problems);
    }
    problems
}

fn check_nginx_server(server: &Directive, problems: &mut Vec<String>) {
    if !server.has("listen", &["${LISTEN}"]) {
        problems.push("server does not `listen ${LISTEN}`".to_owned());
    }
    let server_headers = server.set_headers();
    let locations = server.locations();
    // Every proxying location must set X-Session-User / X-Session-Id, so
    // that a client's copies never pass; a location with any
    // proxy_set_header of its own inherits none of the server's.
    for location in &locations {
        if location.first("proxy_pass").is_none() {
            continue;
        }
        let own = location.set_headers();
        let effective = if own.is_empty() {
            &server_headers
        } else {
            &own
        };
        for header in ["x-session-user", "x-session-id"] {
            if !effective.contains(header) {
                problems.push(format!(
                    "location {}: a client-supplied {header} would reach the upstream",
                    location.args.join(" ")
                ));
            }
        }
    }
    let find = |path: &[&str]| {
        locations
            .iter()
            .find(|l| l.args.iter().map(String::as_str).eq(path.iter().copied()))
            .copied()
    };
    for prefix in ["/v1/auth/", "/.well-known/"] {
        match find(&[prefix]) {
            Some(l) if l.first("proxy_pass").is_some() && l.first("auth_request").is_none() => {}
            _ => problems.push(format!(
                "location {prefix} is not proxied straight to the session service"
            )),
        }
    }
    let protected: Vec<&&Directive> = locations
        .iter()
        .filter(|l| l.first("auth_request").is_some())
        .collect();
    if protected.is_empty() {
        problems.push("no location uses auth_request".to_owned());
    }
    for location in protected {
        let at = format!("location {}", location.args.join(" "));
        for (what, args) in [
            (
                "auth_request_set",
                ["$session_user", "$upstream_http_x_session_user"],
            ),
            (
                "auth_request_set",
                ["$session_id", "$upstream_http_x_session_id"],
            ),
            ("proxy_set_header", ["X-Session-User", "$session_user"]),
            ("proxy_set_header", ["X-Session-Id", "$session_id"]),
        ] {
            if !location.has(what, &args) {
                problems.push(format!("{at}: no `{what} {}`", args.join(" ")));
            }
        }
        let login = location
            .children()
            .iter()
            .find(|d| d.name == "error_page" && d.args.first().is_some_and(|a| a == "401"))
            .and_then(|d| d.args.last())
            .filter(|target| target.starts_with('@'));
        match login.and_then(|name| find(&[name])) {
            Some(named) => {
                let redirects = named.first("return").is_some_and(|r| {
                    r.args.first().is_some_and(|c| c == "302" || c == "303")
                        && r.args.get(1).is_some_and(|u| u.starts_with("/login?next="))
                });
                if !redirects {
                    problems.push(format!(
                        "location {}: does not redirect to /login?next=...",
                        named.args.join(" ")
                    ));
                }
            }
            None => problems.push(format!(
                "{at}: no `error_page 401 = @login` with its location"
            )),
        }
        let target = location.first("auth_request").and_then(|d| d.args.first());
        match target.and_then(|path| find(&["=", path])) {
            Some(verify) => check_verify_location(verify, problems),
            None => problems.push(format!(
                "{at}: the auth_request target is not an exact location"
            )),
        }
    }
    let login_page = find(&["=", "/login"]);
    if login_page.is_none_or(|l| l.first("auth_request").is_some()) {
        problems.push(
            "location = /login must exist without auth_request (else the redirect loops)"
                .to_owned(),
        );
    }
}

fn check_verify_location(verify: &Directive, problems: &mut Vec<String>) {
    let at = format!("location {}", verify.args.join(" "));
    for (name, args) in [
        ("internal", &[][..]),
        ("proxy_pass_request_body", &["off"][..]),
        ("proxy_set_header", &["Content-Length", ""][..]),
        ("proxy_set_header", &["X-Original-URI", "$request_uri"][..]),
        (
            "proxy_set_header",
            &["X-Original-URL", "$scheme://$http_host$request_uri"][..],
        ),
        (
            "proxy_set_header",
            &["X-Original-Method", "$request_method"][..],
        ),
        ("proxy_set_header", &["DPoP", "$http_dpop"][..]),
        ("proxy_set_header", &["Cookie", "$http_cookie"][..]),
        (
            "proxy_set_header",
            &["Authorization", "$http_authorization"][..],
        ),
        ("proxy_method", &["GET"][..]),
    ] {
        if !verify.has(name, args) {
            problems.push(format!("{at}: no `{name} {}`", args.join(" ")));
        }
    }
    let passes_to_verify = verify
        .first("proxy_pass")
        .and_then(|d| d.args.first())
        .is_some_and(|url| url.ends_with("/v1/auth/verify"));
    if !passes_to_verify {
        problems.push(format!("{at}: does not proxy_pass to .../v1/auth/verify"));
    }
}

pub(super) fn nginx_test(program: &Path, auth_conf: &str, nginx_conf: &str) -> Result<Vec<String>> {
    let dir = tempfile::tempdir().context("creating a temporary directory")?;
    std::fs::create_dir(dir.path().join("tmp")).context("creating nginx's temp directory")?;
    for (name, text) in [("session-auth.conf", auth_conf), ("nginx.conf", nginx_conf)] {
        let path = dir.path().join(name);
        std::fs::write(&path, template_nginx(text))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    let (success, output) = run_captured(
        Command::new(program)
            .arg("-t")
            .arg("-q")
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(dir.path().join("nginx.conf"))
            .arg("-e")
            .arg(dir.path().join("error.log")),
    )?;
    Ok(if success {
        Vec::new()
    } else {
        vec![format!("nginx -t failed: {}", output.trim())]
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deploy::tests::{assert_problem, deploy_file};

    #[test]
    fn templating_fills_only_the_placeholders() {
        let out = template_nginx("listen ${LISTEN}; set $x $session_user; server ${APP_UPSTREAM};");
        assert_eq!(
            out,
            "listen 127.0.0.1:18000; set $x $session_user; server 127.0.0.1:18090;"
        );
        assert!(placeholders(&template_nginx(&deploy_file("nginx/session-auth.conf"))).is_empty());
    }

    #[test]
    fn a_location_whose_own_headers_drop_the_session_headers_is_refused() {
        // The nginx trap: one proxy_set_header in a location and none of
        // the server's (which strip X-Session-User) apply any more.
        let conf = deploy_file("nginx/session-auth.conf");
        let from = "    location /.well-known/ {\n        proxy_pass http://session_public;\n";
        assert!(conf.contains(from));
        let broken = conf.replacen(
            from,
            "    location /.well-known/ {\n        proxy_set_header Host $host;\n        proxy_pass http://session_public;\n",
            1,
        );
        let problems = check_nginx_template(&broken, &deploy_file("nginx/nginx.conf"));
        assert_problem(
            &problems,
            "location /.well-known/: a client-supplied x-session-user would reach the upstream",
        );
    }

    #[test]
    fn a_verify_location_that_forwards_the_body_is_refused() {
        let conf =
            deploy_file("nginx/session-auth.conf").replacen("proxy_pass_request_body off;", "", 1);
        assert_problem(
            &check_nginx_template(&conf, &deploy_file("nginx/nginx.conf")),
            "no `proxy_pass_request_body off`",
        );
    }

    #[test]
    fn an_unknown_placeholder_is_refused() {
        let conf = deploy_file("nginx/session-auth.conf").replacen(
            "server_name _;",
            "server_name ${HOST};",
            1,
        );
        assert_problem(
            &check_nginx_template(&conf, &deploy_file("nginx/nginx.conf")),
            "placeholders are",
        );
    }

    #[test]
    fn the_nginx_parser_reads_quotes_comments_and_nested_blocks() {
        let parsed = parse_nginx("# c\nserver { location @x { if ($a) { return 401; } } add_header A 'b \"c\" d' always; x \"\"; }").unwrap();
        let server = &parsed[0];
        assert_eq!(server.name, "server");
        assert_eq!(server.locations().len(), 1);
        assert!(server.has("add_header", &["A", "b \"c\" d", "always"]));
        assert!(server.has("x", &[""]));
        assert!(parse_nginx("server {").is_err());
    }
}
