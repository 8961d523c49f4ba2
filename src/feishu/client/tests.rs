use super::*;

#[test]
fn only_credentials_and_scope_stop_the_run() {
    let fatal = [
        CallError::Credentials {
            code: 10015,
            msg: String::new(),
        },
        CallError::MissingScope { msg: String::new() },
    ];
    assert!(fatal.iter().all(CallError::is_fatal));
    let not_fatal = [
        CallError::BotNotInChat {
            chat_id: "oc_1".into(),
        },
        CallError::Rejected {
            code: 230001,
            msg: String::new(),
        },
        CallError::GaveUp {
            attempts: 6,
            last: String::new(),
        },
        CallError::Api {
            code: 1,
            msg: String::new(),
            status: 400,
        },
    ];
    assert!(!not_fatal.iter().any(CallError::is_fatal));
}

#[test]
fn a_config_hides_its_secret_and_a_bad_one_is_refused() {
    let config = ClientConfig::new(
        "https://open.feishu.cn/",
        "cli_a",
        Secret::new("s3cr3t".into()),
    );
    let shown = format!("{config:?}");
    assert!(
        shown.contains("***") && !shown.contains("s3cr3t"),
        "{shown}"
    );
    let client = Client::new(config.clone()).expect("a client");
    assert_eq!(client.base_url(), "https://open.feishu.cn");
    assert!(!format!("{client:?}").contains("s3cr3t"));
    for base_url in ["open.feishu.cn", "ftp://open.feishu.cn", "https://x/?a=1"] {
        let bad = ClientConfig {
            base_url: base_url.into(),
            ..config.clone()
        };
        assert!(
            matches!(Client::new(bad), Err(ClientError::BaseUrl { .. })),
            "{base_url}"
        );
    }
    let no_secret = ClientConfig {
        app_secret: Secret::new(String::new()),
        ..config
    };
    let err = Client::new(no_secret).expect_err("an empty secret");
    assert_eq!(err.to_string(), "no app secret: set FEISHU_APP_SECRET");
}
