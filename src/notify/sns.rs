//! Publishing to an SNS topic with `aws-sdk-sns`.
use std::time::Duration;

use aws_config::{BehaviorVersion, retry::RetryConfig, timeout::TimeoutConfig};
use aws_sdk_sns::{Client, error::DisplayErrorContext, types::MessageAttributeValue};

use super::{Outgoing, PublishResult, Sink};

#[derive(Clone)]
pub struct SnsSink {
    client: Client,
    topic_arn: String,
}

impl SnsSink {
    /// Region, credentials and endpoint from the standard AWS chain: environment
    /// (including `AWS_ENDPOINT_URL_SNS`), profiles, container and instance roles.
    /// The SDK makes one attempt per call; the outbox does the retrying, durably.
    pub async fn from_environment(topic_arn: &str) -> Self {
        let conf = aws_config::defaults(BehaviorVersion::latest())
            .retry_config(RetryConfig::standard().with_max_attempts(1))
            .timeout_config(TimeoutConfig::builder().operation_timeout(Duration::from_secs(15)).build())
            .load()
            .await;
        Self { client: Client::new(&conf), topic_arn: topic_arn.to_owned() }
    }

    /// With a client configured by the caller (tests point it at a local server).
    pub fn with_client(client: Client, topic_arn: &str) -> Self {
        Self { client, topic_arn: topic_arn.to_owned() }
    }

    pub fn topic_arn(&self) -> &str {
        &self.topic_arn
    }

    fn is_fifo(&self) -> bool {
        self.topic_arn.ends_with(".fifo")
    }

    /// Publish one message; the SNS MessageId on success, a readable error otherwise.
    pub async fn publish(&self, m: &Outgoing) -> PublishResult {
        let attr = |v: &str| {
            MessageAttributeValue::builder().data_type("String").string_value(v).build().map_err(|e| e.to_string())
        };
        let mut req = self
            .client
            .publish()
            .topic_arn(&self.topic_arn)
            .message(&m.body)
            .subject(&m.subject)
            .message_attributes("event", attr(&m.event)?)
            .message_attributes("severity", attr(&m.severity)?);
        if let Some(account) = &m.account_id {
            req = req.message_attributes("account_id", attr(account)?);
        }
        if self.is_fifo() {
            // One ordered stream per account; the event id makes redelivery idempotent.
            req = req
                .message_group_id(m.account_id.clone().unwrap_or_else(|| "breakglass".into()))
                .message_deduplication_id(&m.event_id);
        }
        let out = req.send().await.map_err(|e| DisplayErrorContext(&e).to_string())?;
        Ok(out.message_id().unwrap_or_default().to_owned())
    }
}

impl Sink for SnsSink {
    fn name(&self) -> &'static str {
        "sns"
    }

    fn publish<'a>(
        &'a self,
        message: &'a Outgoing,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = PublishResult> + Send + 'a>> {
        Box::pin(SnsSink::publish(self, message))
    }
}
