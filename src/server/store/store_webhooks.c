/* store_webhooks — the webhook_deliveries table (store.h "webhook deliveries"):
 * the Svix message ids already applied, claimed inside the caller's transaction
 * so that a delivery and its effects commit together. Owns no memory.
 */
#include "server/store/store_int.h"

store_rc store_webhook_claim(store *s, const char *delivery_id, long window_s)
{
    NEED(delivery_id);
    char now[32], since[32];
    st_stamp(s, now);
    st_ts_ago(window_s, since); /* text order is time order */
    db_param p[] = {db_text(delivery_id), db_text(now), db_text(since)};
    db_result r = DB_RESULT_INIT;
    /* one statement, so that the unique index decides between two concurrent claims */
    store_rc rc = st_write(s,
                           "INSERT INTO webhook_deliveries (id, processed_at) VALUES ($1, $2) "
                           "ON CONFLICT (id) DO UPDATE SET processed_at = excluded.processed_at "
                           "WHERE webhook_deliveries.processed_at < $3",
                           p, NP(p), &r);
    if (rc == STORE_OK && r.changes == 0) {
        st_fail(s, "delivery already applied");
        rc = STORE_CONFLICT;
    }
    db_result_free(&r);
    return rc;
}

store_rc store_webhook_prune(store *s, long window_s)
{
    char since[32];
    st_ts_ago(window_s, since); /* text order is time order */
    db_param p[] = {db_text(since)};
    return st_write(s, "DELETE FROM webhook_deliveries WHERE processed_at < $1", p, NP(p), NULL);
}
