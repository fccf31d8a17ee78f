SELECT
    order_date,
    COUNT(*) AS order_count,
    SUM(amount_cents) AS revenue_cents
FROM raw_orders
GROUP BY order_date
ORDER BY order_date
