/* src/crypto/stream_v3.c: format 3's stream key and elements. The receiver with the
 * client's key, the attested enclave key and the request hash opens every element
 * in order; anyone else fails: a party that sees every public value on the wire (the
 * stream key's public half, the salt, both public keys, the request hash) but holds
 * neither private key, a stream key made without the enclave's key (a forger that
 * knows only the client's public key), another request's hash. Any skipped,
 * reordered or re-kinded element fails; the request hash covers every raw field. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "crypto/stream_v3.h"

typedef struct parties {
    x25519_key *enclave, *client;
    uint8_t enclave_pub[32], client_pub[32];
    uint8_t hash[SV3_HASH_LEN];
    uint8_t epk[32], salt[32];
    sv3 tx, rx;
} parties;

static void setup_parties(parties *p)
{
    memset(p, 0, sizeof *p);
    assert_non_null(p->enclave = x25519_key_generate(p->enclave_pub));
    assert_non_null(p->client = x25519_key_generate(p->client_pub));
    assert_int_equal(random_bytes(p->hash, sizeof p->hash), 0);
    assert_int_equal(sv3_init_sender(&p->tx, p->enclave, p->client_pub, p->hash, p->epk, p->salt), 0);
    assert_int_equal(sv3_init_receiver(&p->rx, p->client, p->enclave_pub, p->epk, p->salt, p->hash), 0);
}

static void free_parties(parties *p)
{
    x25519_key_free(p->enclave);
    x25519_key_free(p->client);
    sv3_wipe(&p->tx);
    sv3_wipe(&p->rx);
}

static void seal(sv3 *s, sv3_kind kind, const char *text, uint8_t *ct, uint8_t tag[16])
{
    assert_int_equal(sv3_seal(s, kind, (const uint8_t *)text, strlen(text), ct, tag), 0);
}

static void test_roundtrip_and_end(void **state)
{
    (void)state;
    parties p;
    setup_parties(&p);
    const char *texts[] = {"Echo: hi", " chunk 1", " chunk 2"};
    for (int i = 0; i < 3; i++) {
        uint8_t ct[32], tag[16], pt[32];
        seal(&p.tx, i == 1 ? SV3_THINKING : SV3_TEXT, texts[i], ct, tag);
        assert_int_equal(sv3_open(&p.rx, i == 1 ? SV3_THINKING : SV3_TEXT, ct, strlen(texts[i]), tag, pt), 0);
        assert_memory_equal(pt, texts[i], strlen(texts[i]));
    }
    uint8_t hashes[SV3_END_LEN], ct[SV3_END_LEN], tag[16], pt[SV3_END_LEN];
    memset(hashes, 0x5a, sizeof hashes);
    assert_int_equal(sv3_seal(&p.tx, SV3_END, hashes, sizeof hashes, ct, tag), 0);
    assert_int_equal(p.rx.seq, 3);
    assert_int_equal(sv3_open(&p.rx, SV3_END, ct, sizeof ct, tag, pt), 0);
    assert_memory_equal(pt, hashes, sizeof hashes);
    free_parties(&p);
}

/* A party that saw every public value but holds no private key derives another K. */
static void test_outsiders_cannot_open(void **state)
{
    (void)state;
    parties p;
    setup_parties(&p);
    uint8_t ct[16], tag[16], pt[16];
    seal(&p.tx, SV3_TEXT, "secret answer", ct, tag);
    /* its own key, with every public value of the real stream */
    uint8_t mine_pub[32];
    x25519_key *mine = x25519_key_generate(mine_pub);
    sv3 eve;
    assert_int_equal(sv3_init_receiver(&eve, mine, p.enclave_pub, p.epk, p.salt, p.hash), 0);
    assert_int_equal(sv3_open(&eve, SV3_TEXT, ct, 13, tag, pt), -1);
    sv3_wipe(&eve);
    /* the real client, but the hash of another request: K belongs to one request */
    uint8_t other[SV3_HASH_LEN];
    memcpy(other, p.hash, sizeof other);
    other[0] ^= 1;
    assert_int_equal(sv3_init_receiver(&eve, p.client, p.enclave_pub, p.epk, p.salt, other), 0);
    assert_int_equal(sv3_open(&eve, SV3_TEXT, ct, 13, tag, pt), -1);
    sv3_wipe(&eve);
    /* the real client with another stream's public values (its epk, or its salt) */
    uint8_t epk2[32], salt2[32];
    sv3 other_stream;
    assert_int_equal(sv3_init_sender(&other_stream, p.enclave, p.client_pub, p.hash, epk2, salt2), 0);
    assert_int_equal(sv3_init_receiver(&eve, p.client, p.enclave_pub, epk2, p.salt, p.hash), 0);
    assert_int_equal(sv3_open(&eve, SV3_TEXT, ct, 13, tag, pt), -1);
    sv3_wipe(&eve);
    assert_int_equal(sv3_init_receiver(&eve, p.client, p.enclave_pub, p.epk, salt2, p.hash), 0);
    assert_int_equal(sv3_open(&eve, SV3_TEXT, ct, 13, tag, pt), -1);
    sv3_wipe(&eve);
    sv3_wipe(&other_stream);
    /* and with the real values, the real client opens it (the refusals above are not
     * the fixture's fault) */
    assert_int_equal(sv3_init_receiver(&eve, p.client, p.enclave_pub, p.epk, p.salt, p.hash), 0);
    assert_int_equal(sv3_open(&eve, SV3_TEXT, ct, 13, tag, pt), 0);
    sv3_wipe(&eve);
    /* a forger without the enclave's key: its own "enclave" key makes a stream the
     * real client (who expects the attested key) cannot open */
    uint8_t fake_pub[32], fepk[32], fsalt[32], fct[16], ftag[16];
    x25519_key *fake = x25519_key_generate(fake_pub);
    sv3 forged, rx;
    assert_int_equal(sv3_init_sender(&forged, fake, p.client_pub, p.hash, fepk, fsalt), 0);
    seal(&forged, SV3_TEXT, "forged answer", fct, ftag);
    assert_int_equal(sv3_init_receiver(&rx, p.client, p.enclave_pub, fepk, fsalt, p.hash), 0);
    assert_int_equal(sv3_open(&rx, SV3_TEXT, fct, 13, ftag, pt), -1);
    sv3_wipe(&forged);
    sv3_wipe(&rx);
    x25519_key_free(fake);
    x25519_key_free(mine);
    free_parties(&p);
}

static void test_order_and_kind(void **state)
{
    (void)state;
    parties p;
    setup_parties(&p);
    uint8_t c0[8], t0[16], c1[8], t1[16], pt[8];
    seal(&p.tx, SV3_TEXT, "zero", c0, t0);
    seal(&p.tx, SV3_TEXT, "one", c1, t1);
    assert_int_equal(sv3_open(&p.rx, SV3_TEXT, c1, 3, t1, pt), -1); /* element 1 first: refused */
    assert_int_equal(p.rx.seq, 0);                                    /* and the count stays */
    assert_int_equal(sv3_open(&p.rx, SV3_THINKING, c0, 4, t0, pt), -1); /* another kind */
    assert_int_equal(sv3_open(&p.rx, SV3_END, c0, 4, t0, pt), -1);      /* cut short as an end */
    assert_int_equal(sv3_open(&p.rx, SV3_TEXT, c0, 4, t0, pt), 0);
    assert_int_equal(sv3_open(&p.rx, SV3_TEXT, c1, 3, t1, pt), 0);
    free_parties(&p);
}

static void test_json_elements(void **state)
{
    (void)state;
    parties p;
    setup_parties(&p);
    uint8_t ct[8], tag[16];
    seal(&p.tx, SV3_TEXT, "abc", ct, tag);
    json_t *el = json_pack("{s:I, s:s, s:s}", "seq", (json_int_t)1, "ciphertext", "000000", "auth_tag",
                           "00000000000000000000000000000000");
    uint8_t *pt;
    size_t n;
    assert_int_equal(sv3_open_json(&p.rx, SV3_TEXT, el, &pt, &n), -1); /* seq 1 != 0 */
    json_decref(el);
    char cth[7], tagh[33];
    for (int i = 0; i < 3; i++)
        sprintf(cth + 2 * i, "%02x", ct[i]);
    for (int i = 0; i < 16; i++)
        sprintf(tagh + 2 * i, "%02x", tag[i]);
    el = json_pack("{s:I, s:s, s:s}", "seq", (json_int_t)0, "ciphertext", cth, "auth_tag", tagh);
    assert_int_equal(sv3_open_json(&p.rx, SV3_TEXT, el, &pt, &n), 0);
    assert_int_equal(n, 3);
    assert_memory_equal(pt, "abc", 3);
    free(pt);
    json_decref(el);
    free_parties(&p);
}

/* request_hash covers every raw field, in the fixed order. */
static void test_ep_hash(void **state)
{
    (void)state;
    uint8_t priv[32], pub[32];
    assert_int_equal(x25519_keygen(priv, pub), 0);
    ep e;
    assert_int_equal(ep_seal(pub, (const uint8_t *)"request", 7, SV3_REQUEST_CONTEXT, &e), EP_OK);
    uint8_t h0[32], h[32];
    sv3_ep_hash(&e, h0);
    uint8_t *fields[] = {e.epk, e.salt, e.iv, e.ct, e.tag};
    for (size_t f = 0; f < 5; f++) {
        fields[f][0] ^= 1;
        sv3_ep_hash(&e, h);
        assert_memory_not_equal(h, h0, 32);
        fields[f][0] ^= 1;
    }
    sv3_ep_hash(&e, h);
    assert_memory_equal(h, h0, 32);
    ep_clear(&e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip_and_end), cmocka_unit_test(test_outsiders_cannot_open),
        cmocka_unit_test(test_order_and_kind),    cmocka_unit_test(test_json_elements),
        cmocka_unit_test(test_ep_hash),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
