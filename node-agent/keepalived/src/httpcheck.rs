//! Recognising the curl and wget health-check scripts people put in `vrrp_script`, so that
//! `convert` can turn them into the agent's own HTTP check (`track.http`), which needs no curl
//! in the image.
//!
//! Only a single command with options whose meaning `track.http` has is converted:
//! - curl: `-f/--fail`, `--fail-with-body`, `-s/--silent`, `-S/--show-error`, `-q`,
//!   `-o/--output /dev/null`, `-k/--insecure`, `-L/--location`, `-m/--max-time SECONDS`,
//!   `--connect-timeout SECONDS`, `--cacert FILE`, short options combined (`-kLs`, `-sfk`);
//! - wget: `-q/--quiet`, `-O/--output-document /dev/null` (or `-`), `--spider`,
//!   `--no-check-certificate`, `-T/--timeout SECONDS`, `-t/--tries 1`,
//!   `--ca-certificate FILE`, `--no-verbose`/`-nv`, and `--opt=value` forms;
//! - one `http://` or `https://` URL, optionally `>/dev/null`, `2>/dev/null`, `2>&1` after it.
//!   An unquoted `?` is taken literally (as a shell does when no file matches).
//!
//! Anything else (headers, methods, data, proxies, pipes, `&&`, variables, other programs)
//! keeps the script, and [`Recognised::NotConvertible`] says why when it is curl or wget. The
//! differences that remain are reported as notes: curl without `--fail` succeeds on *any*
//! HTTP response while `track.http` wants status 200; `-L` and wget follow redirects while
//! `track.http` takes the first response.

/// A script turned into an HTTP check.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpCheck {
    /// The URL.
    pub url: String,
    /// Accept any certificate (`-k`, `--no-check-certificate`).
    pub insecure: bool,
    /// CA file (`--cacert`, `--ca-certificate`).
    pub ca_file: Option<String>,
    /// The tool's own time limit in seconds (`-m`, `-T`), if given.
    pub max_time_secs: Option<f64>,
    /// What the conversion changes about the check's meaning.
    pub notes: Vec<String>,
}

/// What a `vrrp_script` command line is.
#[derive(Debug, Clone, PartialEq)]
pub enum Recognised {
    /// A curl/wget check `track.http` can express.
    Http(HttpCheck),
    /// curl or wget, but with something `track.http` cannot express (why).
    NotConvertible(String),
    /// Something else.
    Other,
}

/// Split like a POSIX shell would for simple commands: whitespace, single and double quotes,
/// backslash escapes. `None` when the line uses the shell beyond that (pipes, lists,
/// substitutions, globs, unmatched quotes), except the redirections to `/dev/null` listed in
/// the module docs, which are dropped.
fn split(line: &str) -> Option<Vec<String>> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                loop {
                    match chars.next()? {
                        '\'' => break,
                        x => cur.push(x),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next()? {
                        '"' => break,
                        '\\' => cur.push(chars.next()?),
                        '$' | '`' => return None,
                        x => cur.push(x),
                    }
                }
            }
            '\\' => {
                in_word = true;
                cur.push(chars.next()?);
            }
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            '|' | ';' | '&' | '<' | '(' | ')' | '$' | '`' | '*' | '[' | '{' | '}' | '#' => {
                return None;
            }
            '>' => {
                // Only `>/dev/null`, `2>/dev/null`, `2>&1`.
                let fd = std::mem::take(&mut cur);
                if in_word && fd != "1" && fd != "2" {
                    return None;
                }
                let mut target = String::new();
                while let Some(&n) = chars.peek() {
                    if n.is_whitespace() {
                        break;
                    }
                    target.push(n);
                    chars.next();
                }
                if target.is_empty() {
                    // `> /dev/null`
                    while chars.peek().is_some_and(|c| c.is_whitespace()) {
                        chars.next();
                    }
                    while let Some(&n) = chars.peek() {
                        if n.is_whitespace() {
                            break;
                        }
                        target.push(n);
                        chars.next();
                    }
                }
                if target != "/dev/null" && !(fd == "2" && target == "&1") {
                    return None;
                }
                in_word = false;
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    Some(words)
}

fn seconds(v: &str) -> Option<f64> {
    v.parse::<f64>().ok().filter(|s| s.is_finite() && *s > 0.0)
}

/// Recognise a `vrrp_script` command line.
pub fn recognise(script: &str) -> Recognised {
    let Some(words) = split(script) else {
        let first = script.split_whitespace().next().unwrap_or("");
        let tool = first.rsplit('/').next().unwrap_or("");
        return if tool == "curl" || tool == "wget" {
            Recognised::NotConvertible(
                "it uses the shell (pipes, lists, variables or other redirections)".into(),
            )
        } else {
            Recognised::Other
        };
    };
    let Some((prog, args)) = words.split_first() else {
        return Recognised::Other;
    };
    match prog.rsplit('/').next().unwrap_or("") {
        "curl" => curl(args),
        "wget" => wget(args),
        _ => Recognised::Other,
    }
}

fn no(why: impl Into<String>) -> Recognised {
    Recognised::NotConvertible(why.into())
}

fn url_arg(url: &mut Option<String>, a: &str) -> Result<(), String> {
    if !(a.starts_with("http://") || a.starts_with("https://")) {
        return Err(format!("argument {a:?} is not an http:// or https:// URL"));
    }
    if url.replace(a.to_string()).is_some() {
        return Err("it checks more than one URL".into());
    }
    Ok(())
}

fn curl(args: &[String]) -> Recognised {
    let (mut fail, mut insecure, mut location) = (false, false, false);
    let mut ca_file = None;
    let mut max_time = None;
    let mut url = None;
    let mut i = 0;
    while i < args.len() {
        let a = args[i].as_str();
        let value = |i: &mut usize| -> Option<String> {
            *i += 1;
            args.get(*i).cloned()
        };
        let (name, inline) = match a.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n, Some(v.to_string())),
            _ => (a, None),
        };
        match name {
            "--fail" | "--fail-with-body" => fail = true,
            "--silent" | "--show-error" => {}
            "--insecure" => insecure = true,
            "--location" => location = true,
            "--output" | "--max-time" | "--connect-timeout" | "--cacert" => {
                let Some(v) = inline.or_else(|| value(&mut i)) else {
                    return no(format!("{name} needs a value"));
                };
                match name {
                    "--output" if v != "/dev/null" => {
                        return no(format!("--output {v} writes the body somewhere"));
                    }
                    "--max-time" => match seconds(&v) {
                        Some(s) => max_time = Some(s),
                        None => return no(format!("--max-time {v} is not a number of seconds")),
                    },
                    "--cacert" => ca_file = Some(v),
                    _ => {}
                }
            }
            n if n.starts_with("--") => {
                return no(format!("option {n} has no track.http equivalent"));
            }
            n if n.starts_with('-') && n.len() > 1 => {
                let letters: Vec<char> = n[1..].chars().collect();
                for (j, c) in letters.iter().enumerate() {
                    let last = j + 1 == letters.len();
                    match c {
                        'f' => fail = true,
                        's' | 'S' | 'q' => {}
                        'k' => insecure = true,
                        'L' => location = true,
                        'o' | 'm' => {
                            let v = if last {
                                value(&mut i)
                            } else {
                                Some(letters[j + 1..].iter().collect())
                            };
                            let Some(v) = v else {
                                return no(format!("-{c} needs a value"));
                            };
                            if *c == 'o' && v != "/dev/null" {
                                return no(format!("-o {v} writes the body somewhere"));
                            }
                            if *c == 'm' {
                                match seconds(&v) {
                                    Some(s) => max_time = Some(s),
                                    None => {
                                        return no(format!("-m {v} is not a number of seconds"));
                                    }
                                }
                            }
                            break;
                        }
                        other => {
                            return no(format!("option -{other} has no track.http equivalent"));
                        }
                    }
                }
            }
            other => {
                if let Err(why) = url_arg(&mut url, other) {
                    return no(why);
                }
            }
        }
        i += 1;
    }
    let Some(url) = url else {
        return no("no http:// or https:// URL");
    };
    let mut notes = Vec::new();
    if !fail {
        notes.push("curl without --fail succeeds on any HTTP response; track.http succeeds on status 200 only".to_string());
    }
    if location {
        notes.push("track.http does not follow redirects (-L): the first response decides".into());
    }
    finish(url, insecure, ca_file, max_time, notes)
}

fn wget(args: &[String]) -> Recognised {
    let mut insecure = false;
    let mut ca_file = None;
    let mut max_time = None;
    let mut url = None;
    let mut i = 0;
    while i < args.len() {
        let a = args[i].as_str();
        let value = |i: &mut usize| -> Option<String> {
            *i += 1;
            args.get(*i).cloned()
        };
        let (name, inline) = match a.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n, Some(v.to_string())),
            _ => (a, None),
        };
        match name {
            "--quiet" | "--spider" | "--no-verbose" | "-nv" => {}
            "--no-check-certificate" => insecure = true,
            "--output-document" | "--timeout" | "--tries" | "--ca-certificate" | "-O" | "-T"
            | "-t" => {
                let Some(v) = inline.or_else(|| value(&mut i)) else {
                    return no(format!("{name} needs a value"));
                };
                match name {
                    "--output-document" | "-O" if v != "/dev/null" && v != "-" => {
                        return no(format!("{name} {v} writes the body somewhere"));
                    }
                    "--timeout" | "-T" => match seconds(&v) {
                        Some(s) => max_time = Some(s),
                        None => return no(format!("{name} {v} is not a number of seconds")),
                    },
                    "--tries" | "-t" if v != "1" => {
                        return no(format!("{name} {v}: track.http tries once per interval"));
                    }
                    "--ca-certificate" => ca_file = Some(v),
                    _ => {}
                }
            }
            "-q" => {}
            "-qO" | "-qO-" => {
                let v = if name == "-qO-" {
                    Some("-".to_string())
                } else {
                    value(&mut i)
                };
                if !matches!(v.as_deref(), Some("/dev/null" | "-")) {
                    return no("-O writes the body somewhere");
                }
            }
            n if n.starts_with('-') => {
                return no(format!("option {n} has no track.http equivalent"));
            }
            other => {
                if let Err(why) = url_arg(&mut url, other) {
                    return no(why);
                }
            }
        }
        i += 1;
    }
    let Some(url) = url else {
        return no("no http:// or https:// URL");
    };
    let notes =
        vec!["wget follows redirects, track.http does not: the first response decides".to_string()];
    finish(url, insecure, ca_file, max_time, notes)
}

fn finish(
    url: String,
    insecure: bool,
    ca_file: Option<String>,
    max_time_secs: Option<f64>,
    mut notes: Vec<String>,
) -> Recognised {
    if let Err(why) = crds::validate::parse_http_url(&url) {
        return no(format!("the URL {url:?} {why}"));
    }
    let https = url.starts_with("https://");
    if !https && (insecure || ca_file.is_some()) {
        notes.push("certificate options are ignored for an http:// URL".into());
    }
    if insecure && ca_file.is_some() {
        notes.push("-k / --no-check-certificate wins over the CA file".into());
    }
    Recognised::Http(HttpCheck {
        url,
        insecure: https && insecure,
        ca_file: ca_file.filter(|_| https && !insecure),
        max_time_secs,
        notes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn http(s: &str) -> HttpCheck {
        match recognise(s) {
            Recognised::Http(h) => h,
            other => panic!("{s}: {other:?}"),
        }
    }

    #[test]
    fn common_curl_checks() {
        let h = http("curl -o /dev/null -kLs https://localhost:6443/readyz");
        assert_eq!(h.url, "https://localhost:6443/readyz");
        assert!(h.insecure && h.ca_file.is_none());
        assert_eq!(h.notes.len(), 2, "{:?}", h.notes);
        let h = http("/usr/bin/curl -sfk --max-time 2 https://127.0.0.1:6443/healthz");
        assert_eq!(h.max_time_secs, Some(2.0));
        assert!(h.notes.is_empty(), "{:?}", h.notes);
        let h = http(
            "curl --silent --fail --cacert /etc/kubernetes/pki/ca.crt 'https://10.0.0.1:6443/livez?verbose' >/dev/null 2>&1",
        );
        assert_eq!(h.ca_file.as_deref(), Some("/etc/kubernetes/pki/ca.crt"));
        assert_eq!(h.url, "https://10.0.0.1:6443/livez?verbose");
        assert!(!h.insecure);
        let h = http("curl -fsSm1.5 http://127.0.0.1:8080/");
        assert_eq!(h.max_time_secs, Some(1.5));
        let h = http("curl --fail --max-time=3 --connect-timeout 1 http://127.0.0.1/ > /dev/null");
        assert_eq!(h.max_time_secs, Some(3.0));
    }

    #[test]
    fn common_wget_checks() {
        let h = http("wget -q -O /dev/null --no-check-certificate https://127.0.0.1:6443/readyz");
        assert!(h.insecure);
        let h = http("/usr/bin/wget --spider -q -T 2 --tries=1 http://localhost:80/health");
        assert_eq!(h.max_time_secs, Some(2.0));
        let h = http("wget -qO- http://127.0.0.1/");
        assert_eq!(h.url, "http://127.0.0.1/");
    }

    #[test]
    fn what_cannot_be_expressed_keeps_the_script_and_says_why() {
        for (s, why) in [
            ("curl -H 'Host: x' http://127.0.0.1/", "-H"),
            ("curl -X POST http://127.0.0.1/", "-X"),
            ("curl -s http://127.0.0.1/ | grep ok", "uses the shell"),
            ("curl -sf http://a/ && curl -sf http://b/", "uses the shell"),
            ("curl -sf http://a/ http://b/", "more than one URL"),
            ("curl -o /tmp/out http://a/", "writes the body"),
            ("curl -sf $URL", "uses the shell"),
            ("curl -sf", "no http"),
            ("wget -t 3 http://a/", "tries once"),
            ("wget --post-data=x http://a/", "--post-data"),
            ("curl -sf ftp://a/", "not an http"),
        ] {
            match recognise(s) {
                Recognised::NotConvertible(w) => assert!(w.contains(why), "{s}: {w}"),
                other => panic!("{s}: {other:?}"),
            }
        }
        for s in [
            "/usr/local/bin/check.sh",
            "pidof haproxy",
            "killall -0 haproxy",
            "test -f /tmp/x",
        ] {
            assert_eq!(recognise(s), Recognised::Other, "{s}");
        }
    }
}
