//! SigV4-signed JSON calls to one AWS service in one region, retried with backoff when
//! AWS throttles or fails, every retry written down for the timeline.

use crate::credentials::{Credentials, Environment};
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use std::time::{Duration, SystemTime};

/// How a call is retried: `attempts` in all, the delay doubling from `first_delay` up to
/// `max_delay`.
#[derive(Clone, Copy, Debug)]
pub struct Retry {
    pub attempts: u32,
    pub first_delay: Duration,
    pub max_delay: Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Retry { attempts: 5, first_delay: Duration::from_millis(200), max_delay: Duration::from_secs(5) }
    }
}

/// A call that did not succeed: the operation, and AWS's status, error type and message
/// (or the transport's failure, with no status).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{operation}: {}{code}: {message}", status.map(|s| format!("{s} ")).unwrap_or_default())]
pub struct CallError {
    pub operation: String,
    pub status: Option<u16>,
    pub code: String,
    pub message: String,
}

impl CallError {
    pub fn is_not_found(&self) -> bool {
        self.status == Some(404) || self.code == "ResourceNotFoundException"
    }

    /// Throttled, or a failure on AWS's side, or no answer: worth another try.
    fn is_retryable(&self) -> bool {
        match self.status {
            None => true,
            Some(429) => true,
            Some(s) if s >= 500 => true,
            Some(_) => matches!(
                self.code.as_str(),
                "ThrottlingException" | "TooManyRequestsException" | "RequestLimitExceeded" | "Throttling"
            ),
        }
    }
}

/// Where a service is reached: `AWS_ENDPOINT_URL_{SERVICE_ID}` (`AWS_ENDPOINT_URL_LAMBDA`,
/// `AWS_ENDPOINT_URL_CLOUDWATCH`), else `AWS_ENDPOINT_URL`, else
/// `https://{host_prefix}.{region}.amazonaws.com` (`lambda`, `monitoring`).
pub fn endpoint(env: &dyn Environment, service_id: &str, host_prefix: &str, region: &str) -> Result<url::Url, String> {
    let specific = format!("AWS_ENDPOINT_URL_{}", service_id.to_ascii_uppercase().replace(['-', ' '], "_"));
    let (text, from) = match env.var(&specific).map(|v| (v, specific.clone())) {
        Some(found) => found,
        None => match env.var("AWS_ENDPOINT_URL") {
            Some(v) => (v, "AWS_ENDPOINT_URL".to_owned()),
            None => (format!("https://{host_prefix}.{region}.amazonaws.com"), "the region".to_owned()),
        },
    };
    let url = url::Url::parse(&text).map_err(|e| format!("{from}: {text:?} is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.cannot_be_a_base() {
        return Err(format!("{from}: {text:?} is not an http(s) URL"));
    }
    Ok(url)
}

/// One service in one region.
pub struct Client {
    agent: ureq::Agent,
    credentials: Credentials,
    region: String,
    service: &'static str,
    endpoint: url::Url,
    retry: Retry,
}

impl Client {
    pub fn new(
        service: &'static str,
        region: &str,
        endpoint: url::Url,
        credentials: Credentials,
        retry: Retry,
    ) -> Client {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into();
        Client { agent, credentials, region: region.to_owned(), service, endpoint, retry }
    }

    pub fn region(&self) -> &str {
        &self.region
    }

    /// Calls `operation`: `method` on the endpoint's path with `segments` appended (each
    /// percent-encoded), with `query` and an optional JSON body. Retries what is worth
    /// retrying; each retry is a line in `journal`.
    pub fn call(
        &self,
        operation: &str,
        method: &str,
        segments: &[&str],
        query: &[(&str, &str)],
        body: Option<&serde_json::Value>,
        journal: &mut Vec<String>,
    ) -> Result<serde_json::Value, CallError> {
        let mut url = self.endpoint.clone();
        url.path_segments_mut()
            .map_err(|()| self.failure(operation, None, "Endpoint", "the endpoint cannot take a path"))?
            .pop_if_empty()
            .extend(segments);
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let content_type = (!body.is_empty()).then_some("application/json");
        self.with_retries(journal, || self.once(operation, method, &url, &body, content_type, None))
    }

    /// Calls `operation` of a service that speaks the AWS JSON 1.0 protocol (CloudWatch):
    /// a POST to the endpoint with the `x-amz-target` header.
    pub fn call_json_rpc(
        &self,
        target_prefix: &str,
        operation: &str,
        body: &serde_json::Value,
        journal: &mut Vec<String>,
    ) -> Result<serde_json::Value, CallError> {
        let target = format!("{target_prefix}.{operation}");
        let body = body.to_string();
        let content_type = Some("application/x-amz-json-1.0");
        self.with_retries(journal, || self.once(operation, "POST", &self.endpoint, &body, content_type, Some(&target)))
    }

    fn with_retries(
        &self,
        journal: &mut Vec<String>,
        call: impl Fn() -> Result<serde_json::Value, CallError>,
    ) -> Result<serde_json::Value, CallError> {
        let mut delay = self.retry.first_delay;
        let mut attempt = 1;
        loop {
            match call() {
                Ok(value) => return Ok(value),
                Err(e) if e.is_retryable() && attempt < self.retry.attempts => {
                    journal.push(format!("{e}; retry {attempt} in {} ms", delay.as_millis()));
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(self.retry.max_delay);
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn once(
        &self,
        operation: &str,
        method: &str,
        url: &url::Url,
        body: &str,
        content_type: Option<&str>,
        target: Option<&str>,
    ) -> Result<serde_json::Value, CallError> {
        let host = match url.port() {
            Some(port) => format!("{}:{port}", url.host_str().unwrap_or_default()),
            None => url.host_str().unwrap_or_default().to_owned(),
        };
        let mut headers: Vec<(String, String)> = vec![("host".into(), host)];
        if let Some(content_type) = content_type {
            headers.push(("content-type".into(), content_type.into()));
        }
        if let Some(target) = target {
            headers.push(("x-amz-target".into(), target.into()));
        }
        let signed = self
            .sign(method, url.as_str(), &headers, body.as_bytes())
            .map_err(|why| self.failure(operation, None, "Signing", &format!("cannot sign the request: {why}")))?;
        headers.extend(signed);
        let mut request = ureq::http::Request::builder().method(method).uri(url.as_str());
        for (name, value) in &headers {
            // ureq sets Host from the URI.
            if name != "host" {
                request = request.header(name, value);
            }
        }
        let request = request
            .body(body.as_bytes().to_vec())
            .map_err(|e| self.failure(operation, None, "Request", &e.to_string()))?;
        let mut response =
            self.agent.run(request).map_err(|e| self.failure(operation, None, "Transport", &e.to_string()))?;
        let status = response.status().as_u16();
        let error_type = response
            .headers()
            .get("x-amzn-errortype")
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(':').next().unwrap_or(v).to_owned());
        let text = response.body_mut().read_to_string().unwrap_or_default();
        let json: serde_json::Value = if text.trim().is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text.clone()))
        };
        if (200..300).contains(&status) {
            return Ok(json);
        }
        let field = |k: &str| json.get(k).and_then(|v| v.as_str()).map(str::to_owned);
        let code = error_type
            .or_else(|| field("__type").map(|t| t.rsplit('#').next().unwrap_or(&t).to_owned()))
            .unwrap_or_else(|| format!("HTTP{status}"));
        let message = field("Message").or_else(|| field("message")).unwrap_or_else(|| truncate(&text, 300));
        Err(self.failure(operation, Some(status), &code, &message))
    }

    fn failure(&self, operation: &str, status: Option<u16>, code: &str, message: &str) -> CallError {
        CallError { operation: operation.to_owned(), status, code: code.to_owned(), message: message.to_owned() }
    }

    /// The headers SigV4 adds (`authorization`, `x-amz-date`, and the session token).
    fn sign(
        &self,
        method: &str,
        url: &str,
        headers: &[(String, String)],
        body: &[u8],
    ) -> Result<Vec<(String, String)>, String> {
        let identity = aws_credential_types::Credentials::new(
            &self.credentials.access_key_id,
            &self.credentials.secret_access_key,
            self.credentials.session_token.clone(),
            None,
            "rollwave",
        )
        .into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name(self.service)
            .time(SystemTime::now())
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| e.to_string())?
            .into();
        let signable = SignableRequest::new(
            method,
            url,
            headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            SignableBody::Bytes(body),
        )
        .map_err(|e| e.to_string())?;
        let (instructions, _signature) = sign(signable, &params).map_err(|e| e.to_string())?.into_parts();
        Ok(instructions.headers().map(|(k, v)| (k.to_owned(), v.to_owned())).collect())
    }
}

fn truncate(text: &str, at: usize) -> String {
    match text.char_indices().nth(at) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_service_s_endpoint_comes_from_its_own_variable_then_the_global_one_then_the_region() {
        let url = |env: &dyn Environment| endpoint(env, "lambda", "lambda", "eu-west-1").map(|u| u.to_string());
        assert_eq!(url(&[("X", "")]).unwrap(), "https://lambda.eu-west-1.amazonaws.com/");
        assert_eq!(url(&[("AWS_ENDPOINT_URL", "http://127.0.0.1:5000")]).unwrap(), "http://127.0.0.1:5000/");
        assert_eq!(
            url(&[("AWS_ENDPOINT_URL", "http://a:1"), ("AWS_ENDPOINT_URL_LAMBDA", "http://b:2")]).unwrap(),
            "http://b:2/"
        );
        let bad = url(&[("AWS_ENDPOINT_URL", "file:///etc/passwd")]).unwrap_err();
        assert!(bad.contains("not an http(s) URL"), "{bad}");
        let cloudwatch =
            |env: &dyn Environment| endpoint(env, "CloudWatch", "monitoring", "eu-west-1").unwrap().to_string();
        assert_eq!(cloudwatch(&[("X", "")]), "https://monitoring.eu-west-1.amazonaws.com/");
        assert_eq!(cloudwatch(&[("AWS_ENDPOINT_URL_CLOUDWATCH", "http://c:3")]), "http://c:3/");
    }

    /// A server on a free port that answers each connection with the next of `answers`
    /// (status, `x-amzn-errortype`, body), then closes it; it counts what it answered.
    fn answering(
        answers: Vec<(u16, &'static str, &'static str)>,
    ) -> (url::Url, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap()).parse().unwrap();
        let served = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = std::sync::Arc::clone(&served);
        std::thread::spawn(move || {
            for (status, error_type, body) in answers {
                let Ok((mut stream, _)) = listener.accept() else { return };
                let mut request = [0u8; 8192];
                let _ = stream.read(&mut request);
                let head = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\nx-amzn-errortype: {error_type}\r\n\
                     content-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(head.as_bytes());
                let _ = stream.write_all(body.as_bytes());
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        });
        (url, served)
    }

    fn client(url: url::Url) -> Client {
        let credentials = Credentials {
            access_key_id: "AKID".into(),
            secret_access_key: "s".into(),
            session_token: None,
            source: "test".into(),
        };
        let retry = Retry { attempts: 4, first_delay: Duration::from_millis(1), max_delay: Duration::from_millis(4) };
        Client::new("lambda", "us-east-1", url, credentials, retry)
    }

    #[test]
    fn a_throttled_call_is_retried_over_http_and_each_retry_is_written_down() {
        let throttled = (429, "TooManyRequestsException", r#"{"message":"Rate exceeded"}"#);
        let (url, served) = answering(vec![throttled, throttled, (200, "", r#"{"FunctionVersion":"3"}"#)]);
        let mut journal = Vec::new();
        let answer =
            client(url).call("GetAlias f:live", "GET", &["2015-03-31", "functions", "f"], &[], None, &mut journal);
        assert_eq!(answer.unwrap()["FunctionVersion"], "3");
        assert_eq!(served.load(std::sync::atomic::Ordering::SeqCst), 3);
        assert_eq!(
            journal,
            [
                "GetAlias f:live: 429 TooManyRequestsException: Rate exceeded; retry 1 in 1 ms",
                "GetAlias f:live: 429 TooManyRequestsException: Rate exceeded; retry 2 in 2 ms",
            ]
        );
        // A refusal is not retried: it is the answer.
        let denied = (403, "AccessDeniedException", r#"{"Message":"not authorized to perform lambda:UpdateAlias"}"#);
        let (url, served) = answering(vec![denied, denied]);
        let mut journal = Vec::new();
        let e = client(url).call("UpdateAlias f:live", "PUT", &["x"], &[], None, &mut journal).unwrap_err();
        assert_eq!(
            e.to_string(),
            "UpdateAlias f:live: 403 AccessDeniedException: not authorized to perform lambda:UpdateAlias"
        );
        assert!(journal.is_empty());
        assert_eq!(served.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[test]
    fn throttling_and_server_failures_are_retried_and_client_mistakes_are_not() {
        let e = |status, code: &str| CallError {
            operation: "GetAlias".into(),
            status,
            code: code.into(),
            message: String::new(),
        };
        assert!(e(Some(429), "TooManyRequestsException").is_retryable());
        assert!(e(Some(503), "ServiceException").is_retryable());
        assert!(e(None, "Transport").is_retryable());
        assert!(e(Some(400), "ThrottlingException").is_retryable());
        assert!(!e(Some(404), "ResourceNotFoundException").is_retryable());
        assert!(!e(Some(403), "AccessDeniedException").is_retryable());
        assert_eq!(e(Some(403), "AccessDeniedException").to_string(), "GetAlias: 403 AccessDeniedException: ",);
    }
}
