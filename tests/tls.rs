//! TLS: the client trusts the system's certificate store (here named by `SSL_CERT_FILE`, as a
//! company's TLS-intercepting proxy has its CA installed there) as well as the Mozilla roots
//! built in, and refuses a certificate that neither vouches for. The API is the emulator
//! behind a TLS front on localhost, with a certificate from a private CA.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::apply::{Background, Config, PATIENCE, apply_cmd, config_dir, fast};
use crate::util::Dir;

/// A private CA (its PEM) and a certificate for `localhost` it signed, with its key.
fn private_pki() -> (String, CertificateDer<'static>, PrivateKeyDer<'static>) {
    let ca_key = KeyPair::generate().expect("a CA key");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca.distinguished_name
        .push(DnType::CommonName, "feedbuttons test proxy CA");
    let ca_pem = ca.self_signed(&ca_key).expect("the CA certificate").pem();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().expect("a server key");
    let cert = CertificateParams::new(vec!["localhost".to_owned()])
        .expect("server params")
        .signed_by(&key, &issuer)
        .expect("the server certificate");
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    (ca_pem, cert.der().clone(), key)
}

/// Terminates TLS on a free port of localhost and passes the bytes to `upstream`.
async fn tls_front(
    upstream: SocketAddr,
    cert: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
) -> u16 {
    let provider = Arc::new(tokio_rustls::rustls::crypto::aws_lc_rs::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .expect("a server config");
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("an address").port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let Ok(mut plain) = TcpStream::connect(upstream).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ca_in_the_system_store_is_trusted_and_an_unknown_one_is_not() {
    let emu = fast().await;
    let (ca_pem, cert, key) = private_pki();
    let port = tls_front(emu.addr, cert, key).await;
    let base_url = format!("https://localhost:{port}");
    let certs = Dir::new().file("proxy-ca.pem", &ca_pem);
    let config = Config::default().chat("oc_tls").everyone(&["status"]);

    // Without the CA: the certificate is refused (the client would retry for a minute; the
    // first refusal in its log is enough).
    let dir = config_dir(&config);
    let mut refused = apply_cmd(&emu, dir.path(), &[]);
    refused
        .env("FEISHU_BASE_URL", &base_url)
        .env("FEEDBUTTONS_LOG", "feedbuttons=debug")
        .env("SSL_CERT_FILE", dir.path().join("no-such-file.pem"));
    let mut run = Background::spawn(refused);
    let started = Instant::now();
    loop {
        let log = run.read("stderr");
        if log.contains("invalid peer certificate") {
            assert!(log.contains("UnknownIssuer"), "{log}");
            break;
        }
        assert!(started.elapsed() < PATIENCE, "no refusal logged:\n{log}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    run.sigkill();

    // With the CA where the system's store is looked for: applied over TLS.
    let dir = config_dir(&config);
    let mut trusted = apply_cmd(&emu, dir.path(), &[]);
    trusted
        .env("FEISHU_BASE_URL", &base_url)
        .env("SSL_CERT_FILE", certs.path().join("proxy-ca.pem"));
    crate::apply::run(trusted).await.assert_code(0);
}
