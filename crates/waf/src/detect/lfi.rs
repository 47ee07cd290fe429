//! Path traversal (LFI): a user parameter that is the tail of the opened path and either is the
//! whole absolute path or escapes a directory (`..` after at least one other segment).
//! Unix semantics (the platform Warden runs on); Windows separators are not special here.

use super::Found;

/// True when `value` contains a `..` segment and more than one segment in total.
fn escapes_directory(value: &str, seps: &[char]) -> bool {
    let mut parts = 0u32;
    let mut dotdot = false;
    for part in value.split(|c| seps.contains(&c)) {
        if part.is_empty() {
            continue;
        }
        parts += 1;
        dotdot |= part == "..";
        if parts > 1 && dotdot {
            return true;
        }
    }
    false
}

pub(crate) fn check(path: &str, param: &str) -> Option<Found> {
    if param.len() < 5 || !param.contains('/') || !path.ends_with(param) {
        return None;
    }
    let hit = (param.starts_with('/') && param == path) || escapes_directory(param, &['/']);
    hit.then(|| Found {
        highlight: param.to_string(),
        resource_value: None,
    })
}

#[cfg(test)]
mod tests {
    use super::check;

    #[test]
    fn unix_samples() {
        assert!(check("documents/../../../etc/passwd", "../../../etc/passwd").is_some());
        assert!(check("/etc/passwd", "/etc/passwd").is_some());
        assert!(check("imgs/../secret.yml", "../secret.yml").is_some());
        assert!(check("/var/www/images/cat.png", "cat.png").is_none());
        assert!(check("/home/user/../passwd", "passwd").is_none());
    }
}
