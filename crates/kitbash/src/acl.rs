//! `kitbash acl`: the Redis ACL file of this deployment, generated from the schema
//! (`kitbash_schema::acl`), with each user's password from the environment or a file, printed
//! as its SHA-256 (`#<hex>`, which Redis ACL files accept) unless `--show-passwords`.

use std::path::{Path, PathBuf};

use kitbash_schema::Keys;
use kitbash_schema::acl::{self, AclUser, Role};
use sha2::{Digest, Sha256};

/// Why the file could not be made.
#[derive(Debug, thiserror::Error)]
pub enum AclError {
    /// A password file exists but cannot be read.
    #[error("cannot read the password of {user} from {}: {why}", path.display())]
    PasswordFile {
        /// The user.
        user: String,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        why: String,
    },
    /// `--only` named no role.
    #[error(
        "--only {0}: not a role (feynman, entity, decay, ghost, bridge, archive, example, admin, readonly, app)"
    )]
    UnknownRole(String),
}

/// The environment variable holding the password of `role`: `KITBASH_ACL_PASSWORD_FEYNMAN`.
pub fn password_env(role: Role) -> String {
    format!("KITBASH_ACL_PASSWORD_{}", role.slug().to_uppercase())
}

/// What to print.
#[derive(Debug, Default)]
pub struct AclOptions {
    /// Files named after each role (`feynman`, `admin`, …) holding its password.
    pub password_dir: Option<PathBuf>,
    /// Print passwords in clear (`>secret`) instead of their SHA-256 (`#hex`).
    pub show_passwords: bool,
    /// Only these roles (empty: every one).
    pub only: Vec<String>,
}

/// The password of `role`: its environment variable, else its file in `dir`; `None` if
/// neither is set. `env` reads a variable (the process environment, or a test's map).
pub fn password_of(
    role: Role,
    user: &str,
    dir: Option<&Path>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<String>, AclError> {
    if let Some(p) = env(&password_env(role)).filter(|p| !p.is_empty()) {
        return Ok(Some(p));
    }
    let Some(dir) = dir else { return Ok(None) };
    let path = dir.join(role.slug());
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(text
            .lines()
            .next()
            .map(str::to_owned)
            .filter(|p| !p.is_empty())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(AclError::PasswordFile {
            user: user.to_owned(),
            path,
            why: e.to_string(),
        }),
    }
}

/// The ACL rule of a password: `#<sha256 hex>`, or `><password>` when shown.
pub fn password_rule(password: &str, show: bool) -> String {
    if show {
        format!(">{password}")
    } else {
        format!("#{}", hex::encode(Sha256::digest(password.as_bytes())))
    }
}

/// The ACL file and the names of the users left without a password (printed `off`).
pub fn render(
    keys: &Keys,
    opts: &AclOptions,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(String, Vec<String>), AclError> {
    let mut users: Vec<AclUser> = acl::users(keys);
    if !opts.only.is_empty() {
        for o in &opts.only {
            if Role::parse(o).is_none() {
                return Err(AclError::UnknownRole(o.clone()));
            }
        }
        users.retain(|u| opts.only.iter().any(|o| o == u.role.slug()));
    }
    let mut rules = Vec::with_capacity(users.len());
    let mut without = Vec::new();
    for u in &users {
        let pw = password_of(u.role, &u.name, opts.password_dir.as_deref(), env)?;
        if pw.is_none() {
            without.push(u.name.clone());
        }
        rules.push(pw.map(|p| password_rule(&p, opts.show_passwords)));
    }
    let mut rules = rules.into_iter();
    let text = acl::render(&users, |_| rules.next().flatten());
    Ok((text, without))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_hashed_unless_shown_and_missing_ones_switch_the_user_off() {
        let dir = tempfile::tempdir().expect("dir");
        std::fs::write(dir.path().join("decay"), "from-file\nignored\n").expect("write");
        let env = |k: &str| (k == "KITBASH_ACL_PASSWORD_FEYNMAN").then(|| "s3cret".to_owned());
        let opts = AclOptions {
            password_dir: Some(dir.path().to_path_buf()),
            ..Default::default()
        };
        let (text, without) = render(&Keys::default(), &opts, &env).expect("render");
        assert!(
            !text.contains("s3cret") && !text.contains("from-file"),
            "{text}"
        );
        let sha = hex::encode(Sha256::digest(b"s3cret"));
        assert!(
            text.contains(&format!("user kitbash-feynman reset on #{sha} ")),
            "{text}"
        );
        let sha = hex::encode(Sha256::digest(b"from-file"));
        assert!(
            text.contains(&format!("user kitbash-decay reset on #{sha} ")),
            "{text}"
        );
        assert!(text.contains("user kitbash-ghost reset off "), "{text}");
        assert!(without.contains(&"kitbash-ghost".to_owned()));
        assert!(!without.contains(&"kitbash-feynman".to_owned()));
        let shown = AclOptions {
            show_passwords: true,
            only: vec!["feynman".into()],
            ..Default::default()
        };
        let (text, _) = render(&Keys::default(), &shown, &env).expect("render");
        assert!(
            text.contains("user kitbash-feynman reset on >s3cret "),
            "{text}"
        );
        assert_eq!(text.lines().filter(|l| l.starts_with("user ")).count(), 1);
        let bad = AclOptions {
            only: vec!["nobody".into()],
            ..Default::default()
        };
        assert!(render(&Keys::default(), &bad, &env).is_err());
    }
}
