DROP TABLE message_routes;
DROP TABLE pool_metrics;
DROP TABLE agent_pools;
DROP TABLE vendors;
