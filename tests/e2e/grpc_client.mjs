// Bills by usage over gRPC from Node with the TypeScript client `make clients`
// generates (protoc-gen-es, clients/ts) and Connect's gRPC transport, straight
// to the services as `make run` prints them: the API key names the
// organization (OrganizationService.AuthenticateApiKey) and every call carries
// it in the x-bxb-organization metadata. Errors are read from the
// google.rpc.Status in grpc-status-details-bin.
//
// Environment: BXB_TS_CLIENT (the generated code), BXB_API_KEY,
// BXB_CATALOG_ADDRESS, BXB_METERING_ADDRESS, BXB_INVOICING_ADDRESS, and
// BXB_SERVICE_TOKEN: services without mutual TLS honour organization metadata
// only from a caller carrying the deployment's service token (x-bxb-service).
// Prints what it saw as one JSON line; any unexpected answer fails an assert.
// Run by tests/e2e/test_typescript_client.py.
import assert from "node:assert/strict";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { pathToFileURL } from "node:url";

import { timestampDate, timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";

const env = process.env;
const generated = (file) => import(pathToFileURL(join(env.BXB_TS_CLIENT, file)).href);
const [organizations, metrics, plans, customers, subscriptions, events, usage, invoicing, billingRuns, errorDetails] =
  await Promise.all(
    [
      "bxb/catalog/v1/organizations_pb.js",
      "bxb/catalog/v1/billable_metrics_pb.js",
      "bxb/catalog/v1/plans_pb.js",
      "bxb/catalog/v1/customers_pb.js",
      "bxb/catalog/v1/subscriptions_pb.js",
      "bxb/metering/v1/usage_events_pb.js",
      "bxb/metering/v1/usage_pb.js",
      "bxb/invoicing/v1/invoices_pb.js",
      "bxb/invoicing/v1/billing_runs_pb.js",
      "google/rpc/error_details_pb.js",
    ].map(generated),
  );

const transport = (address) => createGrpcTransport({ baseUrl: `http://${address}` });
const catalog = transport(env.BXB_CATALOG_ADDRESS);
const metering = transport(env.BXB_METERING_ADDRESS);
const invoicingTransport = transport(env.BXB_INVOICING_ADDRESS);

// The organization the API key belongs to names every other call.
const trusted = { "x-bxb-service": env.BXB_SERVICE_TOKEN };
const { organizationId } = await createClient(organizations.OrganizationService, catalog).authenticateApiKey(
  { secret: env.BXB_API_KEY },
  { headers: trusted },
);
const call = { headers: { ...trusted, "x-bxb-organization": organizationId }, timeoutMs: 15000 };

async function failure(promise) {
  try {
    await promise;
  } catch (error) {
    const connectError = ConnectError.from(error);
    const [info] = connectError.findDetails(errorDetails.ErrorInfoSchema);
    return { code: Code[connectError.code], reason: info.reason, domain: info.domain, field: info.metadata.field };
  }
  assert.fail("the call succeeded");
}

const metricService = createClient(metrics.BillableMetricService, catalog);
const metric = {
  code: "api_requests",
  name: "API Requests",
  aggregationType: metrics.AggregationType.SUM,
  fieldName: "tokens",
};
const created = await metricService.createBillableMetric({ billableMetric: metric }, call);
assert.match(created.id, /^bm_/);
const duplicate = await failure(metricService.createBillableMetric({ billableMetric: metric }, call));
const anonymous = await failure(metricService.listBillableMetrics({}));

await createClient(plans.PlanService, catalog).createPlan(
  {
    plan: {
      code: "payg",
      name: "Pay As You Go",
      interval: plans.PlanInterval.MONTHLY,
      amountCents: 0n,
      currency: "USD",
      charges: [
        {
          billableMetricCode: "api_requests",
          chargeModel: plans.ChargeModel.STANDARD,
          properties: { amount: "0.001" },
        },
      ],
    },
  },
  call,
);
await createClient(customers.CustomerService, catalog).createCustomer(
  { customer: { id: "cus_ts", name: "Node Customer", currency: "USD" } },
  call,
);

// Last month, which has ended: its invoice can be issued at once.
const now = new Date();
const periodStart = new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth() - 1, 1));
const periodEnd = new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), 1));
const subscription = await createClient(subscriptions.SubscriptionService, catalog).createSubscription(
  { customerId: "cus_ts", planCode: "payg", startTime: timestampFromDate(periodStart) },
  call,
);
assert.equal(subscription.status, subscriptions.SubscriptionStatus.ACTIVE);

// 2,340 tokens in three events, each sent twice: the retries count once.
const eventService = createClient(events.EventService, metering);
const sent = [];
for (let attempt = 0; attempt < 2; attempt++) {
  const { results } = await eventService.submitEvents(
    {
      events: [
        ["txn_ts_1", "1000"],
        ["txn_ts_2", "1000"],
        ["txn_ts_3", "340"],
      ].map(([transactionId, tokens]) => ({
        transactionId,
        customerId: "cus_ts",
        code: "api_requests",
        timestamp: timestampFromDate(new Date(periodStart.getTime() + 14 * 86400_000)),
        properties: { tokens },
      })),
    },
    call,
  );
  sent.push(...results.map((r) => events.IngestOutcome[r.outcome]));
}

const used = await createClient(usage.UsageService, metering).aggregateUsage(
  {
    customerId: "cus_ts",
    code: "api_requests",
    aggregation: usage.Aggregation.SUM,
    fieldName: "tokens",
    startTime: timestampFromDate(periodStart),
    endTime: timestampFromDate(periodEnd),
  },
  call,
);

// Invoicing hears of the subscription over NATS: until billing issues last
// month's invoice, it is listed as a draft priced as it stands.
const invoiceService = createClient(invoicing.InvoiceService, invoicingTransport);
async function lastMonth() {
  const { invoices } = await invoiceService.listInvoices({ customerId: "cus_ts" }, call);
  return invoices.find((i) => i.periodStart && timestampDate(i.periodStart).getTime() === periodStart.getTime());
}
let draft;
for (const deadline = Date.now() + 15000; !draft && Date.now() < deadline; await sleep(50)) {
  draft = await lastMonth();
}
assert.ok(draft, "no draft for last month");
const billing = createClient(billingRuns.BillingRunService, invoicingTransport);
const { invoicesCreated } = await billing.runBilling({ customerId: "cus_ts" }, call);
const invoice = await lastMonth();

const describe = (i) => ({
  status: invoicing.InvoiceStatus[i.status],
  number: i.number,
  currency: i.currency,
  totalAmountCents: Number(i.totalAmountCents),
  fees: i.fees.map((f) => ({ units: f.units, amountCents: Number(f.amountCents), eventsCount: Number(f.eventsCount) })),
});
console.log(
  JSON.stringify({
    organizationId,
    duplicate,
    anonymous,
    sent,
    usage: { value: used.value, eventCount: Number(used.eventCount) },
    draft: describe(draft),
    invoicesCreated,
    invoice: describe(invoice),
  }),
);
