//! Command injection in exec-style calls (argv arrays): the user supplied the whole executable
//! path, or the argv runs a known shell (`sh -c`, `bash -c`, `zsh -c`, `fish -c`, `ksh`, ...)
//! and the user parameter injects into that shell command (see [`super::shell`]).

use serde_json::Value;

use super::Found;
use super::shell;

struct ShellSpec {
    name: &'static str,
    /// PowerShell-style options: `-`, `--` or `/` prefix, case-insensitive, all long.
    windows_opts: bool,
    requires_cmd_opt: bool,
    cmd_after_opt: bool,
    cmd_opts: &'static [&'static str],
    opts_with_arg: &'static [&'static str],
}

const SHELLS: &[ShellSpec] = &[
    ShellSpec {
        windows_opts: false,
        name: "sh",
        requires_cmd_opt: true,
        cmd_after_opt: false,
        cmd_opts: &["c"],
        opts_with_arg: &["O", "o", "init-file", "rcfile"],
    },
    ShellSpec {
        windows_opts: false,
        name: "bash",
        requires_cmd_opt: true,
        cmd_after_opt: false,
        cmd_opts: &["c"],
        opts_with_arg: &["O", "o", "init-file", "rcfile"],
    },
    ShellSpec {
        windows_opts: false,
        name: "ksh",
        requires_cmd_opt: false,
        cmd_after_opt: false,
        cmd_opts: &["c"],
        opts_with_arg: &["o", "T"],
    },
    ShellSpec {
        windows_opts: false,
        name: "rksh",
        requires_cmd_opt: false,
        cmd_after_opt: false,
        cmd_opts: &["c"],
        opts_with_arg: &["o", "T"],
    },
    ShellSpec {
        windows_opts: false,
        name: "fish",
        requires_cmd_opt: true,
        cmd_after_opt: true,
        cmd_opts: &["c", "command"],
        opts_with_arg: &[],
    },
    ShellSpec {
        windows_opts: false,
        name: "zsh",
        requires_cmd_opt: true,
        cmd_after_opt: false,
        cmd_opts: &["c"],
        opts_with_arg: &["o"],
    },
    ShellSpec {
        windows_opts: false,
        name: "dash",
        requires_cmd_opt: true,
        cmd_after_opt: false,
        cmd_opts: &["c"],
        opts_with_arg: &["o"],
    },
    ShellSpec {
        windows_opts: false,
        name: "ash",
        requires_cmd_opt: true,
        cmd_after_opt: false,
        cmd_opts: &["c"],
        opts_with_arg: &["o"],
    },
    ShellSpec {
        windows_opts: true,
        name: "powershell",
        requires_cmd_opt: true,
        cmd_after_opt: true,
        cmd_opts: &["command", "commandwithargs"],
        opts_with_arg: &[],
    },
    ShellSpec {
        windows_opts: true,
        name: "pwsh",
        requires_cmd_opt: true,
        cmd_after_opt: true,
        cmd_opts: &["command", "commandwithargs"],
        opts_with_arg: &[],
    },
];

fn basename(p: &str) -> &str {
    p.rsplit('/').next().unwrap_or(p)
}

fn trim_quotes(s: &str) -> &str {
    let b = s.as_bytes();
    if b.len() > 1
        && ((b[0] == b'"' && b[b.len() - 1] == b'"') || (b[0] == b'\'' && b[b.len() - 1] == b'\''))
    {
        &s[1..s.len() - 1]
    } else {
        s
    }
}

/// The shell command run by `argv`, when argv[0] is a known shell.
fn shell_command<'a>(exe_base: &str, argv: &'a [String]) -> Option<&'a str> {
    let spec = SHELLS.iter().find(|s| s.name == exe_base)?;
    let mut found = !spec.requires_cmd_opt;
    let mut i = 1;
    while i < argv.len() {
        let arg = argv[i].as_str();
        if arg.is_empty() {
            i += 1;
            continue;
        }
        if spec.windows_opts {
            if let Some(opt) = arg.strip_prefix('-').or_else(|| arg.strip_prefix('/')) {
                let opt = opt.strip_prefix('-').unwrap_or(opt).to_ascii_lowercase();
                found |= spec.cmd_opts.contains(&opt.as_str());
                if found {
                    return argv.get(i + 1).map(String::as_str);
                }
                i += 1;
                continue;
            }
            return if found { Some(arg) } else { None };
        }
        if let Some(rest) = arg.strip_prefix("--") {
            if rest.is_empty() {
                if !found {
                    return None;
                }
                return argv.get(i + 1).map(String::as_str);
            }
            let (key, embedded) = match rest.split_once('=') {
                Some((k, v)) if !k.is_empty() && !v.is_empty() => (k, Some(trim_quotes(v))),
                _ => (rest, None),
            };
            found |= spec.cmd_opts.contains(&key);
            if spec.cmd_after_opt && found {
                return embedded.or_else(|| argv.get(i + 1).map(String::as_str));
            }
            if spec.opts_with_arg.contains(&key) {
                i += 1;
            }
        } else if let Some(opts) = arg.strip_prefix('-').or_else(|| arg.strip_prefix('+')) {
            for (j, _) in opts.char_indices() {
                let o = &opts[j..opts[j..]
                    .char_indices()
                    .nth(1)
                    .map_or(opts.len(), |(k, _)| j + k)];
                found |= spec.cmd_opts.contains(&o);
                if spec.cmd_after_opt && found {
                    return argv.get(i + 1).map(String::as_str);
                }
                if spec.opts_with_arg.contains(&o) {
                    i += 1;
                }
            }
        } else {
            return if found { Some(arg) } else { None };
        }
        i += 1;
    }
    None
}

pub(crate) struct Prepared {
    executable: String,
    eval_executable: bool,
    shell: Option<(String, Vec<shell::Token>)>,
    display: String,
}

pub(crate) fn prepare(v: &Value) -> Option<Prepared> {
    let argv: Vec<String> = match v {
        Value::Array(a) if !a.is_empty() => a
            .iter()
            .map(|x| x.as_str().unwrap_or("").to_string())
            .collect(),
        Value::String(s) if !s.is_empty() => vec![s.clone()],
        _ => return None,
    };
    let executable = argv[0].trim().to_string();
    if executable.is_empty() {
        return None;
    }
    let base = basename(&executable);
    let eval_executable = base != executable;
    let shell = shell_command(base, &argv).map(|c| (c.to_string(), shell::tokenize(c)));
    if shell.is_none() && !eval_executable {
        return None;
    }
    let mut display = argv[0].clone();
    for a in &argv[1..] {
        display.push_str(" \"");
        display.push_str(a);
        display.push('"');
    }
    Some(Prepared {
        executable,
        eval_executable,
        shell,
        display,
    })
}

pub(crate) fn check(p: &Prepared, param: &str) -> Option<Found> {
    let found = || {
        Some(Found {
            highlight: param.trim().to_string(),
            resource_value: Some(p.display.clone()),
        })
    };
    if p.eval_executable && param.trim() == p.executable {
        return found();
    }
    if let Some((cmd, tokens)) = &p.shell {
        if shell::find_injection(cmd, tokens, None, param) {
            return Some(Found {
                highlight: param.to_string(),
                resource_value: Some(p.display.clone()),
            });
        }
    }
    None
}
