#!/usr/bin/env bash
# LocalStack init hook (init/ready.d): create the demo queue and its dead-letter queue with a
# redrive policy. Runs inside the LocalStack container (where `awslocal` exists) and from
# localstack/start (where it falls back to boto3 from the LocalStack venv). Idempotent.
#
# The redrive maxReceiveCount (10) is deliberately above stigg-byos's own MAX_RECEIVE_COUNT
# (default 5): stigg-byos records a dead letter with its reason before SQS would move it.
set -euo pipefail
queue="${STIGG_QUEUE_NAME:-stigg-events}"
dlq="${STIGG_DLQ_NAME:-stigg-events-dlq}"
endpoint="${AWS_ENDPOINT_URL:-http://${LOCALSTACK_GATEWAY:-127.0.0.1:4566}}"
region="${AWS_DEFAULT_REGION:-us-east-1}"

if command -v awslocal >/dev/null 2>&1; then
  dlq_url=$(awslocal sqs create-queue --queue-name "$dlq" --query QueueUrl --output text)
  dlq_arn=$(awslocal sqs get-queue-attributes --queue-url "$dlq_url" \
    --attribute-names QueueArn --query Attributes.QueueArn --output text)
  awslocal sqs create-queue --queue-name "$queue" --attributes \
    "{\"RedrivePolicy\":\"{\\\"deadLetterTargetArn\\\":\\\"$dlq_arn\\\",\\\"maxReceiveCount\\\":\\\"10\\\"}\"}" >/dev/null
else
  QUEUE="$queue" DLQ="$dlq" ENDPOINT="$endpoint" REGION="$region" "${PYTHON:-python3}" - <<'PY'
import json, os
import boto3
sqs = boto3.client("sqs", endpoint_url=os.environ["ENDPOINT"], region_name=os.environ["REGION"],
                   aws_access_key_id="test", aws_secret_access_key="test")
dlq_url = sqs.create_queue(QueueName=os.environ["DLQ"])["QueueUrl"]
arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
policy = json.dumps({"deadLetterTargetArn": arn, "maxReceiveCount": "10"})
sqs.create_queue(QueueName=os.environ["QUEUE"], Attributes={"RedrivePolicy": policy})
PY
fi
echo "queues ready: $queue (dead letters: $dlq)" >&2
