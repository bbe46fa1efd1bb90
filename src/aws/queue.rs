//! The central root-activity queue, through `aws-sdk-sqs`.
use std::time::Duration;

use aws_config::{BehaviorVersion, retry::RetryConfig, timeout::TimeoutConfig};
use aws_sdk_sqs::{Client, error::DisplayErrorContext, types::QueueAttributeName};

/// One received message: its body and the handle that deletes it.
#[derive(Debug, Clone)]
pub struct Received {
    pub message_id: String,
    pub body: String,
    pub receipt_handle: String,
}

#[derive(Clone)]
pub struct RootActivityQueue {
    client: Client,
    url: String,
}

impl RootActivityQueue {
    /// Region, credentials and endpoint from the standard AWS chain (environment
    /// including `AWS_ENDPOINT_URL_SQS`, profiles, container and instance roles).
    /// One attempt per call: the poller retries with its own backoff.
    pub async fn from_environment(url: &str) -> Self {
        let conf = aws_config::defaults(BehaviorVersion::latest())
            .retry_config(RetryConfig::standard().with_max_attempts(1))
            .timeout_config(TimeoutConfig::builder().operation_timeout(Duration::from_secs(40)).build())
            .load()
            .await;
        Self { client: Client::new(&conf), url: url.to_owned() }
    }

    /// With a client configured by the caller (tests point it at a local server).
    pub fn with_client(client: Client, url: &str) -> Self {
        Self { client, url: url.to_owned() }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Long-poll up to `wait` seconds (0–20) for at most ten messages.
    pub async fn receive(&self, wait: i32) -> Result<Vec<Received>, String> {
        let out = self
            .client
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(10)
            .wait_time_seconds(wait.clamp(0, 20))
            .send()
            .await
            .map_err(|e| DisplayErrorContext(&e).to_string())?;
        Ok(out
            .messages()
            .iter()
            .filter_map(|m| {
                Some(Received {
                    message_id: m.message_id()?.to_owned(),
                    body: m.body()?.to_owned(),
                    receipt_handle: m.receipt_handle()?.to_owned(),
                })
            })
            .collect())
    }

    pub async fn delete(&self, receipt_handle: &str) -> Result<(), String> {
        self.client
            .delete_message()
            .queue_url(&self.url)
            .receipt_handle(receipt_handle)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| DisplayErrorContext(&e).to_string())
    }

    /// `(waiting, in flight)`: the approximate backlog.
    pub async fn backlog(&self) -> Result<(i64, i64), String> {
        let out = self
            .client
            .get_queue_attributes()
            .queue_url(&self.url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .send()
            .await
            .map_err(|e| DisplayErrorContext(&e).to_string())?;
        let get = |name: QueueAttributeName| {
            out.attributes().and_then(|a| a.get(&name)).and_then(|v| v.parse::<i64>().ok()).unwrap_or(0)
        };
        Ok((
            get(QueueAttributeName::ApproximateNumberOfMessages),
            get(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
        ))
    }
}
