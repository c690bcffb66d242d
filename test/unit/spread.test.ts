import { describe, expect, it } from 'vitest';
import { spreadBySize } from '../../src/postgres/inspect';

describe('spreadBySize', () => {
  it('puts the largest items first, each on the least loaded worker', () => {
    const sizes = { order_items: 650, orders: 230, payments: 110, tenants: 1, locations: 1 };
    const groups = spreadBySize(Object.keys(sizes), 2, (name) => sizes[name as keyof typeof sizes]);
    expect(groups).toEqual([['order_items'], ['orders', 'payments', 'tenants', 'locations']]);
  });

  it('never makes more groups than items, and keeps one group for no items', () => {
    expect(spreadBySize(['a'], 4, () => 1)).toEqual([['a']]);
    expect(spreadBySize([], 2, () => 1)).toEqual([[]]);
  });
});
