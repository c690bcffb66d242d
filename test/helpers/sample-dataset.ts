import { Readable } from 'node:stream';
import { failure } from '../../src/errors';
import { lastLines, type Runner } from '../../src/runner/runner';
import { pgEnv, type PgConnection } from '../../src/runner/postgres-env';

/**
 * A deterministic sample restaurant dataset: tenants, locations, menu items, orders, order items
 * and payments. `sizeMb` scales it from a few MB (tests) to several GB (benchmarks); the same
 * size always yields the same rows.
 */
export interface DatasetOptions {
  /** Approximate size of the table data in MB. */
  sizeMb: number;
  /** Number of tenants (default 5). */
  tenants?: number;
  seed?: number;
  /**
   * `compact` (default): narrow rows, what the tests use. `realistic`: adds what real restaurant
   * data carries (an order's jsonb details, free-text notes, menu descriptions, the payment
   * processor's jsonb response), so the data compresses about 5:1 like production data, not
   * 10:1 or 50:1; benchmarks use it.
   */
  profile?: 'compact' | 'realistic';
}

export const SAMPLE_MIGRATION_HEAD = '0042_add_payments';
export const SAMPLE_TABLES = ['tenants', 'locations', 'menu_items', 'orders', 'order_items', 'payments', 'alembic_version'] as const;

const SCHEMA = `
CREATE TABLE tenants (id text PRIMARY KEY, name text NOT NULL, created_at timestamptz NOT NULL, updated_at timestamptz NOT NULL);
CREATE TABLE locations (id bigint PRIMARY KEY, tenant_id text NOT NULL, name text NOT NULL, city text NOT NULL, timezone text NOT NULL);
CREATE TABLE menu_items (id bigint PRIMARY KEY, tenant_id text NOT NULL, name text NOT NULL, category text NOT NULL, price_cents integer NOT NULL CHECK (price_cents >= 0), active boolean NOT NULL DEFAULT true);
CREATE TABLE orders (id bigint PRIMARY KEY, tenant_id text NOT NULL, location_id bigint NOT NULL, status text NOT NULL, placed_at timestamptz NOT NULL, total_cents integer NOT NULL, customer_note text);
CREATE TABLE order_items (id bigint PRIMARY KEY, order_id bigint NOT NULL, menu_item_id bigint NOT NULL, quantity integer NOT NULL CHECK (quantity > 0), unit_price_cents integer NOT NULL);
CREATE TABLE payments (id bigint PRIMARY KEY, order_id bigint NOT NULL, method text NOT NULL, amount_cents integer NOT NULL, paid_at timestamptz NOT NULL);
CREATE TABLE alembic_version (version_num varchar(32) NOT NULL PRIMARY KEY);
`;

const CONSTRAINTS = `
ALTER TABLE locations ADD CONSTRAINT locations_tenant_fk FOREIGN KEY (tenant_id) REFERENCES tenants(id);
ALTER TABLE menu_items ADD CONSTRAINT menu_items_tenant_fk FOREIGN KEY (tenant_id) REFERENCES tenants(id);
ALTER TABLE orders ADD CONSTRAINT orders_tenant_fk FOREIGN KEY (tenant_id) REFERENCES tenants(id);
ALTER TABLE orders ADD CONSTRAINT orders_location_fk FOREIGN KEY (location_id) REFERENCES locations(id);
ALTER TABLE order_items ADD CONSTRAINT order_items_order_fk FOREIGN KEY (order_id) REFERENCES orders(id);
ALTER TABLE order_items ADD CONSTRAINT order_items_menu_item_fk FOREIGN KEY (menu_item_id) REFERENCES menu_items(id);
ALTER TABLE payments ADD CONSTRAINT payments_order_fk FOREIGN KEY (order_id) REFERENCES orders(id);
CREATE INDEX orders_tenant_placed_idx ON orders (tenant_id, placed_at);
CREATE INDEX order_items_order_idx ON order_items (order_id);
CREATE INDEX payments_order_idx ON payments (order_id);
ANALYZE;
`;

/** mulberry32: small, fast, deterministic. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const CITIES = [
  ['Lisbon', 'Europe/Lisbon'],
  ['Austin', 'America/Chicago'],
  ['Osaka', 'Asia/Tokyo'],
  ['Lyon', 'Europe/Paris'],
  ['Toronto', 'America/Toronto'],
] as const;
const DISHES = ['Margherita', 'Ramen', 'Caesar Salad', 'Bao Buns', 'Pad Thai', 'Burger', 'Falafel Wrap', 'Paella', 'Tacos al Pastor', 'Pho', 'Lemonade', 'Espresso'];
const CATEGORIES = ['mains', 'starters', 'drinks', 'desserts'];
const STATUSES = ['placed', 'paid', 'paid', 'paid', 'refunded', 'cancelled'];
const METHODS = ['card', 'card', 'cash', 'wallet'];

export function tenantId(index: number): string {
  return `tenant-${String(index + 1).padStart(3, '0')}`;
}

export function datasetShape(options: DatasetOptions) {
  const tenants = options.tenants ?? 5;
  // Orders per MB of database (tables and indexes), measured for each profile.
  const perMb = options.profile === 'realistic' ? REALISTIC_ORDERS_PER_MB : 2600;
  const orders = Math.max(50, Math.round(options.sizeMb * perMb));
  return { tenants, locationsPerTenant: 3, menuItemsPerTenant: 24, orders };
}

const BASE_TIME = Date.UTC(2026, 0, 1);

function ts(ms: number): string {
  return new Date(ms).toISOString();
}

function copyEscape(value: string): string {
  return value.replace(/\\/g, '\\\\').replace(/\t/g, '\\t').replace(/\n/g, '\\n');
}

/** The dataset as a psql script: schema, COPY blocks, then constraints and indexes. Generated lazily. */
export async function* sampleDatasetScript(options: DatasetOptions): AsyncGenerator<string> {
  const shape = datasetShape(options);
  const rand = prng(options.seed ?? 42);
  const realistic = options.profile === 'realistic';
  const text = realistic ? textGenerator(rand) : undefined;
  yield 'SET client_min_messages = warning;\nBEGIN;\n';
  yield SCHEMA;
  if (realistic) yield REALISTIC_COLUMNS;
  yield 'COPY tenants (id, name, created_at, updated_at) FROM stdin;\n';
  for (let t = 0; t < shape.tenants; t++) yield `${tenantId(t)}\tRestaurant Group ${t + 1}\t${ts(BASE_TIME - 86400000 * (t + 30))}\t${ts(BASE_TIME)}\n`;
  yield '\\.\n';
  yield 'COPY locations (id, tenant_id, name, city, timezone) FROM stdin;\n';
  for (let t = 0; t < shape.tenants; t++) {
    for (let l = 0; l < shape.locationsPerTenant; l++) {
      const [city, tz] = CITIES[(t + l) % CITIES.length]!;
      yield `${t * shape.locationsPerTenant + l + 1}\t${tenantId(t)}\t${city} ${l + 1}\t${city}\t${tz}\n`;
    }
  }
  yield '\\.\n';
  yield `COPY menu_items (id, tenant_id, name, category, price_cents, active${realistic ? ', description' : ''}) FROM stdin;\n`;
  const prices: number[] = [];
  for (let t = 0; t < shape.tenants; t++) {
    for (let m = 0; m < shape.menuItemsPerTenant; m++) {
      const id = t * shape.menuItemsPerTenant + m + 1;
      const price = 300 + Math.floor(rand() * 2500);
      prices[id] = price;
      yield `${id}\t${tenantId(t)}\t${DISHES[m % DISHES.length]} #${m + 1}\t${CATEGORIES[m % CATEGORIES.length]}\t${price}\t${m % 11 === 10 ? 'f' : 't'}${text ? `\t${copyEscape(text.sentences(2 + Math.floor(rand() * 3)))}` : ''}\n`;
    }
  }
  yield '\\.\n';
  // Orders, items and payments are generated together so totals match; each is buffered per batch.
  let orderRows: string[] = [];
  let itemRows: string[] = [];
  let paymentRows: string[] = [];
  let itemId = 0;
  let paymentId = 0;
  const flushOrders = function* () {
    if (orderRows.length) {
      yield `COPY orders (id, tenant_id, location_id, status, placed_at, total_cents, customer_note${realistic ? ', details' : ''}) FROM stdin;\n` + orderRows.join('') + '\\.\n';
      yield 'COPY order_items (id, order_id, menu_item_id, quantity, unit_price_cents) FROM stdin;\n' + itemRows.join('') + '\\.\n';
      if (paymentRows.length) yield `COPY payments (id, order_id, method, amount_cents, paid_at${realistic ? ', processor_response' : ''}) FROM stdin;\n` + paymentRows.join('') + '\\.\n';
    }
    orderRows = [];
    itemRows = [];
    paymentRows = [];
  };
  for (let o = 1; o <= shape.orders; o++) {
    // Skewed: tenant 1 has the most orders, like a real customer base.
    const t = Math.min(shape.tenants - 1, Math.floor(Math.pow(rand(), 1.6) * shape.tenants));
    const location = t * shape.locationsPerTenant + 1 + Math.floor(rand() * shape.locationsPerTenant);
    const placed = BASE_TIME + Math.floor((o / shape.orders) * 300 * 86400000) + Math.floor(rand() * 3600000);
    const status = STATUSES[Math.floor(rand() * STATUSES.length)]!;
    const lines = 1 + Math.floor(rand() * 4);
    let total = 0;
    const bought: { item: number; quantity: number }[] = [];
    for (let i = 0; i < lines; i++) {
      const menuItem = t * shape.menuItemsPerTenant + 1 + Math.floor(rand() * shape.menuItemsPerTenant);
      const quantity = 1 + Math.floor(rand() * 3);
      const price = prices[menuItem]!;
      total += price * quantity;
      bought.push({ item: menuItem, quantity });
      itemRows.push(`${++itemId}\t${o}\t${menuItem}\t${quantity}\t${price}\n`);
    }
    if (text) {
      const note = rand() < 0.35 ? copyEscape(text.sentences(1 + Math.floor(rand() * 3))) : '\\N';
      orderRows.push(`${o}\t${tenantId(t)}\t${location}\t${status}\t${ts(placed)}\t${total}\t${note}\t${copyEscape(JSON.stringify(orderDetails(rand, text, bought, placed)))}\n`);
    } else {
      const note = rand() < 0.2 ? copyEscape(`no onions, please\ttable ${o % 40}`) : '\\N';
      orderRows.push(`${o}\t${tenantId(t)}\t${location}\t${status}\t${ts(placed)}\t${total}\t${note}\n`);
    }
    if (status !== 'placed' && status !== 'cancelled') {
      const method = METHODS[Math.floor(rand() * METHODS.length)]!;
      const response = text ? `\t${copyEscape(JSON.stringify(processorResponse(rand, method, total)))}` : '';
      paymentRows.push(`${++paymentId}\t${o}\t${method}\t${total}\t${ts(placed + 600000)}${response}\n`);
    }
    if (orderRows.length >= 5000) yield* flushOrders();
  }
  yield* flushOrders();
  yield `INSERT INTO alembic_version VALUES ('${SAMPLE_MIGRATION_HEAD}');\n`;
  yield CONSTRAINTS;
  yield 'COMMIT;\n';
}

const REALISTIC_ORDERS_PER_MB = 700;

const REALISTIC_COLUMNS = `
ALTER TABLE menu_items ADD COLUMN description text;
ALTER TABLE orders ADD COLUMN details jsonb;
ALTER TABLE payments ADD COLUMN processor_response jsonb;
`;

// Words drawn with a Zipf-like skew, as in real notes and descriptions: frequent words repeat,
// the long tail does not, so text compresses about 3:1 rather than into a few repeated phrases.
const COMMON_WORDS =
  'the a and please with no extra on side for to of in is it was but not too very my our we i you your be at as this that from all just so can thanks again order table delivery pickup door ring bell call when here left right gate floor'.split(
    ' ',
  );
const FOOD_WORDS =
  'onions garlic cilantro peanuts gluten dairy vegan spicy mild sauce dressing cheese bacon avocado lime lemon ice sugar salt pepper chili mayo ketchup mustard pickles tomato lettuce rice noodles tofu chicken beef pork shrimp mushrooms olives basil mint ginger sesame soy honey crispy fresh warm cold hot crunchy soft'.split(
    ' ',
  );
const NAMES = 'Ana Bruno Carla Diego Emma Felix Gaia Hugo Ines Jonas Kira Liam Maya Nora Omar Pia Quinn Rosa Sami Tara Uma Vera Wen Xavi Yara Zoe'.split(' ');
const SURNAMES = 'Silva Martin Tanaka Dubois Brown Garcia Rossi Novak Kowalski Jensen Murphy Haddad Costa Moreau Sato Fischer Romero Lindqvist Okafor Petrov'.split(' ');
const STREETS = 'Main Oak Pine Maple Cedar Elm Harbor Market Station Mill River Park Church Bridge King Queen'.split(' ');
const CHANNELS = ['web', 'app', 'app', 'phone', 'kiosk', 'marketplace'];
const MODIFIERS = ['no onions', 'extra cheese', 'gluten free', 'spicy', 'sauce on the side', 'no ice', 'large', 'oat milk', 'well done'];

interface TextGenerator {
  word(): string;
  sentences(count: number): string;
  token(length: number): string;
}

function textGenerator(rand: () => number): TextGenerator {
  // A long tail of made-up words (surnames, street names, typos, codes) that repeat rarely.
  const syllables = ['ka', 'lo', 'mi', 'ne', 'ru', 'ta', 'be', 'so', 'vi', 'da', 'ri', 'po', 'ze', 'gu', 'an', 'el', 'or', 'is'];
  const rare = Array.from({ length: 6000 }, () => Array.from({ length: 2 + Math.floor(rand() * 3) }, () => syllables[Math.floor(rand() * syllables.length)]).join(''));
  const pick = <T>(list: readonly T[]) => list[Math.floor(Math.pow(rand(), 2) * list.length)]!;
  const word = () => {
    const r = rand();
    if (r < 0.45) return pick(COMMON_WORDS);
    if (r < 0.75) return pick(FOOD_WORDS);
    if (r < 0.8) return String(Math.floor(rand() * 200));
    return rare[Math.floor(rand() * rare.length)]!;
  };
  return {
    word,
    sentences(count) {
      const out: string[] = [];
      for (let s = 0; s < count; s++) {
        const words = Array.from({ length: 4 + Math.floor(rand() * 10) }, word);
        words[0] = words[0]!.charAt(0).toUpperCase() + words[0]!.slice(1);
        out.push(`${words.join(' ')}${rand() < 0.8 ? '.' : '!'}`);
      }
      return out.join(' ');
    },
    token(length) {
      let out = '';
      while (out.length < length) out += Math.floor(rand() * 2 ** 30).toString(36);
      return out.slice(0, length);
    },
  };
}

function orderDetails(rand: () => number, text: TextGenerator, bought: { item: number; quantity: number }[], placed: number) {
  const first = NAMES[Math.floor(rand() * NAMES.length)]!;
  const last = SURNAMES[Math.floor(rand() * SURNAMES.length)]!;
  const channel = CHANNELS[Math.floor(rand() * CHANNELS.length)]!;
  const delivery = rand() < 0.55;
  return {
    channel,
    customer: {
      name: `${first} ${last}`,
      email: `${first.toLowerCase()}.${last.toLowerCase()}${Math.floor(rand() * 1000)}@example.com`,
      phone: `+1555${String(Math.floor(rand() * 1e7)).padStart(7, '0')}`,
      loyalty: rand() < 0.3 ? { tier: rand() < 0.2 ? 'gold' : 'silver', points: Math.floor(rand() * 5000) } : null,
    },
    items: bought.map((b) => ({ menu_item_id: b.item, quantity: b.quantity, modifiers: rand() < 0.4 ? [MODIFIERS[Math.floor(rand() * MODIFIERS.length)]] : [] })),
    delivery: delivery
      ? {
          address: `${1 + Math.floor(rand() * 400)} ${STREETS[Math.floor(rand() * STREETS.length)]} ${rand() < 0.5 ? 'Street' : 'Avenue'}`,
          apartment: rand() < 0.4 ? `${Math.floor(rand() * 30)}${'ABCD'[Math.floor(rand() * 4)]}` : null,
          instructions: rand() < 0.3 ? text.sentences(1) : null,
          eta_minutes: 15 + Math.floor(rand() * 45),
          courier_id: text.token(10),
        }
      : null,
    device: channel === 'app' ? { os: rand() < 0.55 ? 'ios' : 'android', app_version: `4.${Math.floor(rand() * 20)}.${Math.floor(rand() * 10)}`, session: text.token(16) } : null,
    promo: rand() < 0.15 ? `SAVE${Math.floor(rand() * 30)}` : null,
    tip_cents: Math.floor(rand() * 800),
    updated_at: ts(placed + Math.floor(rand() * 3600000)),
  };
}

function processorResponse(rand: () => number, method: string, amount: number) {
  const text = { token: (n: number) => Array.from({ length: n }, () => '0123456789abcdef'[Math.floor(rand() * 16)]).join('') };
  return method === 'cash'
    ? { psp: null, status: 'settled', drawer: Math.floor(rand() * 4) + 1 }
    : {
        psp: rand() < 0.6 ? 'stripe' : 'adyen',
        status: 'captured',
        reference: text.token(24),
        auth_code: text.token(6).toUpperCase(),
        card:
          method === 'card'
            ? { brand: rand() < 0.6 ? 'visa' : 'mastercard', last4: String(Math.floor(rand() * 10000)).padStart(4, '0'), exp: `${1 + Math.floor(rand() * 12)}/${27 + Math.floor(rand() * 5)}` }
            : null,
        amount_cents: amount,
        currency: 'USD',
        risk: { score: Math.round(rand() * 100) / 100, level: rand() < 0.9 ? 'normal' : 'elevated' },
      };
}

/** Loads the sample dataset into a database through psql, streaming (never whole in memory). */
export async function loadSampleDataset(runner: Runner, conn: PgConnection, options: DatasetOptions): Promise<void> {
  const running = runner.start({
    tool: 'psql',
    args: ['-X', '-q', '-v', 'ON_ERROR_STOP=1'],
    env: pgEnv(conn),
    stdin: Readable.from(sampleDatasetScript(options)),
  });
  running.stdout.resume();
  const result = await running.done;
  if (result.exitCode !== 0) throw failure('DATASET_LOAD', `loading the sample dataset failed: ${lastLines(result.stderr)}`);
}
