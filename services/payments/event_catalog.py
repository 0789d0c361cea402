"""The public event catalog: every event type bxb sends to webhook endpoints
(and analytics integrations), with what it means. One list: endpoints'
`event_types` are checked against it and ListWebhookEventTypes serves it.

Each event's JSON body is {"type", "timestamp", "data"} (the Standard
Webhooks shape); `data` holds the public API's own JSON of the resources
named below, as GET would show them."""

from __future__ import annotations

CATALOG: dict[str, str] = {
    "customer.created": "A customer was created. data.customer.",
    "customer.updated": "A customer's details changed. data.customer.",
    "subscription.started": "A subscription was created (data.subscription.start_time says when it starts). "
    "data.subscription, data.plan, data.customer.",
    "subscription.terminated": "A subscription was terminated (now or at a date). data.subscription.",
    "subscription.trial_ended": "A subscription's free trial is over. data.subscription_id, data.customer_id, "
    "data.trial_end_time.",
    "subscription.plan_changed": "A subscription moved to another plan (it ends; its successor starts). "
    "data.subscription.",
    "invoice.created": "An invoice first exists: a draft stored for a grace period, or an invoice issued at once. "
    "data.invoice.",
    "invoice.finalized": "An invoice became final: its amounts will not change. data.invoice.",
    "invoice.voided": "An invoice was voided. data.invoice.",
    "invoice.paid": "An invoice's amount was collected. data.invoice.",
    "invoice.payment_failed": "An invoice's payment status became failed (a charge was declined). data.invoice.",
    "invoice.payment_requires_action": "An invoice's payment waits for the customer (3-D Secure or a payment "
    "link: data.invoice.payment_url). data.invoice.",
    "credit_note.created": "A credit note was issued. data.credit_note.",
    "payment.succeeded": "A charge succeeded. data.payment.",
    "payment.failed": "A charge was declined (each declined attempt). data.payment.",
    "payment.refunded": "A payment was refunded, in part or in full. data.payment.",
    "payment.disputed": "The customer disputed a payment. data.payment.",
    "usage_threshold.reached": "A subscription's usage reached a threshold of its plan and the period so far was "
    "invoiced. data.usage_threshold.",
    "events.rejected": "Usage events were rejected at ingestion. data.rejected_events (each with its error).",
    "webhook_endpoint.disabled": "An endpoint was disabled after failing for days (sent to the organization's "
    "other endpoints). data.webhook_endpoint.",
    "webhook.test": "A test event asked for on one endpoint (POST /v1/webhook_endpoints/{id}/test). "
    "data.webhook_endpoint_id.",
}


def unknown(types: list[str]) -> list[str]:
    """The types a subscription names that the catalog does not hold."""
    return [name for name in types if name not in CATALOG]
