//! Connection strings without their secrets, for log lines and error messages. A
//! production `LEAFSYNC_MONGO_URI` (or the producer URI `reconcile` reads) carries a user
//! name and password; anything printed about such a URI goes through [`redact_uri`].

/// Query options whose values are secrets (compared case-insensitively): any option whose
/// name contains one of these.
const SECRET_OPTIONS: [&str; 2] = ["password", "authmechanismproperties"];

/// `uri` with its userinfo replaced by `***` (`mongodb://***@host:27017/db`), and the
/// values of password-like options (`tlsCertificateKeyFilePassword`,
/// `authMechanismProperties`) too. Works for `mongodb://`, `mongodb+srv://` and any
/// other `scheme://`; a string without an `@` keeps its userinfo-free form.
///
/// Everything between the scheme and the *last* `@` counts as userinfo, even a `/` or `?`
/// a user forgot to percent-encode in the password: the driver would split such a string
/// elsewhere, but a redaction must not reveal a mistyped password. A query option holding
/// an `@` therefore hides the host too, which errs on the safe side. Never panics.
pub fn redact_uri(uri: &str) -> String {
    let (scheme, rest) = match uri.find("://") {
        Some(end) => uri.split_at(end + 3),
        None => ("", uri),
    };
    let after_userinfo = match rest.rfind('@') {
        Some(at) => &rest[at..],
        None => rest,
    };
    let masked = if after_userinfo.len() < rest.len() {
        "***"
    } else {
        ""
    };
    let (address, query) = match after_userinfo.split_once('?') {
        Some((address, query)) => (address, Some(query)),
        None => (after_userinfo, None),
    };
    let mut out = format!("{scheme}{masked}{address}");
    if let Some(query) = query {
        out.push('?');
        let options: Vec<String> = query.split('&').map(redact_option).collect();
        out.push_str(&options.join("&"));
    }
    out
}

/// `key=value`, with the value replaced by `***` when the key names a secret.
fn redact_option(pair: &str) -> String {
    match pair.split_once('=') {
        Some((key, _)) if is_secret_option(key) => format!("{key}=***"),
        _ => pair.to_owned(),
    }
}

fn is_secret_option(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    SECRET_OPTIONS.iter().any(|secret| key.contains(secret))
}

#[cfg(test)]
mod tests {
    use super::redact_uri;

    #[test]
    fn the_user_name_and_password_become_stars_and_the_rest_stays() {
        assert_eq!(
            redact_uri("mongodb://admin:hunter2@mongodb-producer:27017/imagedb?w=majority"),
            "mongodb://***@mongodb-producer:27017/imagedb?w=majority"
        );
        assert_eq!(
            redact_uri("mongodb+srv://leafsync:s3cr%40t@cluster0.example.net/?retryWrites=true"),
            "mongodb+srv://***@cluster0.example.net/?retryWrites=true"
        );
        assert_eq!(
            redact_uri("mongodb://reader@h1:27017,h2:27018/?replicaSet=rs0"),
            "mongodb://***@h1:27017,h2:27018/?replicaSet=rs0"
        );
    }

    #[test]
    fn a_uri_without_credentials_is_unchanged() {
        for uri in [
            "mongodb://mongodb-consumer.leaf-image-management-system.svc.cluster.local:27017",
            "mongodb://127.0.0.1:27017/?serverSelectionTimeoutMS=200",
            "mongodb+srv://cluster0.example.net/",
        ] {
            assert_eq!(redact_uri(uri), uri);
        }
    }

    #[test]
    fn a_password_with_unescaped_reserved_characters_is_hidden_whole() {
        // The driver splits these at the `?` or the first `/`, and quotes the pieces.
        for uri in [
            "mongodb://admin:hun?ter2@host:27017",
            "mongodb://admin:hun/ter2@host:27017",
            "mongodb://admin:hun@ter2@host:27017",
            "mongodb+srv://admin:hun#ter2@cluster0.example.net",
        ] {
            let redacted = redact_uri(uri);
            assert!(
                !redacted.contains("hun") && !redacted.contains("ter2"),
                "{redacted}"
            );
            assert!(
                redacted.ends_with("@host:27017") || redacted.ends_with("@cluster0.example.net")
            );
        }
    }

    #[test]
    fn password_options_are_hidden_too() {
        assert_eq!(
            redact_uri("mongodb://host/?tls=true&tlsCertificateKeyFilePassword=pem-secret"),
            "mongodb://host/?tls=true&tlsCertificateKeyFilePassword=***"
        );
        assert_eq!(
            redact_uri(
                "mongodb://host/?authMechanism=MONGODB-AWS&authMechanismProperties=AWS_SESSION_TOKEN:tok"
            ),
            "mongodb://host/?authMechanism=MONGODB-AWS&authMechanismProperties=***"
        );
    }

    #[test]
    fn odd_input_never_panics() {
        let samples = [
            "",
            "@",
            "://",
            "mongodb://",
            "mongodb://@",
            "mongodb://@@?&=",
            "no uri at all",
            "mongodb://ü:ö€@høst/?ä=ö&=&&",
            "?password=x@",
        ];
        for sample in samples {
            // Every prefix, cut at every character boundary.
            for (end, _) in sample.char_indices().chain([(sample.len(), ' ')]) {
                redact_uri(&sample[..end]);
            }
        }
        assert_eq!(redact_uri("admin:hunter2@host"), "***@host");
        assert_eq!(redact_uri("mongodb://ü:ö€@høst"), "mongodb://***@høst");
        assert_eq!(redact_uri("no uri at all"), "no uri at all");
        assert_eq!(redact_uri("mongodb://@host"), "mongodb://@host");
    }
}
