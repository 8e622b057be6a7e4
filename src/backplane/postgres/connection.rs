//! Connecting to PostgreSQL: TLS or not, bounded in time, with the
//! connection's notifications (`LISTEN`) handed to whoever waits on them.

use super::*;

/// A rustls connector trusting the CA certificates of `ca_pem`, or the
/// webpki roots.
#[cfg(feature = "postgres-tls")]
pub(super) fn rustls_connector(
    ca_pem: Option<&[u8]>,
) -> Result<tokio_postgres_rustls::MakeRustlsConnect, BoxError> {
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    let mut roots = rustls::RootCertStore::empty();
    match ca_pem {
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        Some(pem) => {
            for certificate in CertificateDer::pem_slice_iter(pem) {
                roots.add(certificate.map_err(|e| format!("a CA certificate: {e}"))?)?;
            }
            if roots.is_empty() {
                return Err("no CA certificate in the PEM given".into());
            }
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

/// A connection with the table in place; with `notify`, one that `LISTEN`s
/// and wakes `notify` on every notification.
pub(super) async fn open(
    config: &str,
    tls: &Tls,
    table: &str,
    notify: Option<Arc<Notify>>,
) -> Result<Client, BoxError> {
    let client = match tls {
        Tls::None => connect(config, NoTls, notify).await?,
        #[cfg(feature = "postgres-tls")]
        Tls::Rustls(tls) => connect(config, tls.clone(), notify).await?,
    };
    // Made only when missing, so that once it is (by the engine or by a
    // migration), a role that may only read, insert and delete will do.
    let triggers: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_trigger WHERE tgrelid = to_regclass($1) AND tgname = ANY($2)",
            &[
                &table,
                // Unquoted names are folded to lower case.
                &[format!("{table}_order"), format!("{table}_notify")]
                    .map(|name| name.to_lowercase())
                    .as_slice(),
            ],
        )
        .await?
        .get(0);
    let marks: bool = client
        .query_one(
            "SELECT to_regclass($1) IS NOT NULL",
            &[&super::topics::marks(table)],
        )
        .await?
        .get(0);
    if triggers < 2 || !marks {
        // Instances starting together make it one at a time: concurrent
        // `CREATE OR REPLACE` of one function fails ("tuple concurrently
        // updated").
        client
            .batch_execute(&format!(
                "BEGIN; SELECT pg_advisory_xact_lock(hashtext('{table} schema')); {} COMMIT;",
                schema(table)
            ))
            .await?;
    }
    Ok(client)
}

/// Connects with `tls`, and drives the connection on a task of its own:
/// notifications wake `notify`.
async fn connect<T>(config: &str, tls: T, notify: Option<Arc<Notify>>) -> Result<Client, BoxError>
where
    T: MakeTlsConnect<Socket>,
    T::Stream: Send + 'static,
    T::TlsConnect: Send,
    <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
{
    let mut settings: tokio_postgres::Config = config.parse()?;
    // Unless the config says otherwise: a server that does not answer
    // fails the connection, and a connection whose data goes unacknowledged
    // (a peer gone without a word) is dropped, so the hub reconnects
    // instead of waiting on it for the kernel's minutes.
    if settings.get_connect_timeout().is_none() {
        settings.connect_timeout(CONNECT);
    }
    if settings.get_tcp_user_timeout().is_none() {
        settings.tcp_user_timeout(UNACKNOWLEDGED);
    }
    let (client, mut connection) = settings.connect(tls).await?;
    tokio::spawn(async move {
        while let Some(message) = poll_fn(|cx| connection.poll_message(cx)).await {
            match message {
                Ok(AsyncMessage::Notification(_)) => {
                    if let Some(notify) = &notify {
                        notify.notify_one();
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(error = %e, "backplane: PostgreSQL connection ended");
                    break;
                }
            }
        }
    });
    Ok(client)
}
