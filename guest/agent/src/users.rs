//! Users from the image's own /etc/passwd and /etc/group, read as the guest sees
//! them (the agent runs chrooted in the sandbox root). No NSS: the agent is static.

use std::io;

use msb_protocol::User;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub name: Option<String>,
    pub uid: u32,
    pub gid: u32,
    /// Primary group plus every group that lists the user as a member.
    pub groups: Vec<u32>,
    pub home: String,
}

/// Why a user could not be resolved.
#[derive(Debug)]
pub enum LookupError {
    Unknown(String),
    Io(io::Error),
}

pub fn resolve(user: &User) -> Result<Account, LookupError> {
    let passwd = read_optional("/etc/passwd").map_err(LookupError::Io)?;
    let group = read_optional("/etc/group").map_err(LookupError::Io)?;
    resolve_in(user, &passwd, &group)
}

fn read_optional(path: &str) -> io::Result<String> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(text),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(String::new()),
        Err(err) => Err(err),
    }
}

struct PasswdEntry<'a> {
    name: &'a str,
    uid: u32,
    gid: u32,
    home: &'a str,
}

fn passwd_entries(passwd: &str) -> impl Iterator<Item = PasswdEntry<'_>> {
    passwd.lines().filter_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        if fields.len() < 7 {
            return None;
        }
        Some(PasswdEntry {
            name: fields[0],
            uid: fields[2].parse().ok()?,
            gid: fields[3].parse().ok()?,
            home: fields[5],
        })
    })
}

fn resolve_in(user: &User, passwd: &str, group: &str) -> Result<Account, LookupError> {
    let entry = match user {
        User::Name(name) => passwd_entries(passwd).find(|e| e.name == name),
        User::Id(uid) => passwd_entries(passwd).find(|e| e.uid == *uid),
    };
    let (name, uid, gid, home) = match (entry, user) {
        (Some(e), _) => (Some(e.name.to_string()), e.uid, e.gid, e.home.to_string()),
        // A numeric user the image does not list runs with group 0, as in Docker.
        (None, User::Id(uid)) => (None, *uid, 0, "/".to_string()),
        (None, User::Name(name)) => {
            return Err(LookupError::Unknown(format!(
                "user {name:?} is not in the guest's /etc/passwd"
            )))
        }
    };
    let mut groups = vec![gid];
    if let Some(name) = &name {
        for line in group.lines() {
            let fields: Vec<&str> = line.split(':').collect();
            if fields.len() < 4 {
                continue;
            }
            let member = fields[3].split(',').any(|m| m == name);
            if let (true, Ok(gid)) = (member, fields[2].parse::<u32>()) {
                if !groups.contains(&gid) {
                    groups.push(gid);
                }
            }
        }
    }
    Ok(Account {
        name,
        uid,
        gid,
        groups,
        home,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\nbroken line\napp:x:1000:1000::/home/app:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n";
    const GROUP: &str = "root:x:0:\nusers:x:100:app,other\nwheel:x:10:app\napp:x:1000:\n";

    #[test]
    fn names_resolve_with_their_groups_and_home() {
        let app = resolve_in(&User::Name("app".into()), PASSWD, GROUP).unwrap();
        assert_eq!(
            app,
            Account {
                name: Some("app".into()),
                uid: 1000,
                gid: 1000,
                groups: vec![1000, 100, 10],
                home: "/home/app".into(),
            }
        );
    }

    #[test]
    fn ids_resolve_through_passwd_or_fall_back_to_group_zero() {
        let nobody = resolve_in(&User::Id(65534), PASSWD, GROUP).unwrap();
        assert_eq!(nobody.name.as_deref(), Some("nobody"));
        assert_eq!(nobody.gid, 65534);
        let unlisted = resolve_in(&User::Id(4242), PASSWD, GROUP).unwrap();
        assert_eq!(
            (unlisted.uid, unlisted.gid, unlisted.groups),
            (4242, 0, vec![0])
        );
    }

    #[test]
    fn unknown_names_are_errors() {
        assert!(matches!(
            resolve_in(&User::Name("ghost".into()), PASSWD, GROUP),
            Err(LookupError::Unknown(_))
        ));
    }
}
