// keystore — "remember on this device": the unlocked key kept in IndexedDB, only when
// the user asks, and only as non-extractable CryptoKeys (the X25519 private key for
// opening messages, the HMAC key of the history tags): script on this origin can use
// them, nothing can read their bytes. Lock deletes the entry. Keyed by the account.

const DB = 'veil-keys';
const STORE = 'unlocked';

function open() {
  return new Promise((resolve, reject) => {
    const rq = indexedDB.open(DB, 1);
    rq.onupgradeneeded = () => rq.result.createObjectStore(STORE);
    rq.onsuccess = () => resolve(rq.result);
    rq.onerror = () => reject(rq.error);
  });
}

async function tx(mode, fn) {
  const db = await open();
  try {
    return await new Promise((resolve, reject) => {
      const t = db.transaction(STORE, mode);
      const rq = fn(t.objectStore(STORE));
      t.oncomplete = () => resolve(rq && rq.result);
      t.onerror = () => reject(t.error);
      t.onabort = () => reject(t.error);
    });
  } finally {
    db.close();
  }
}

// {publicKey (hex), key, historyKey} for the account, or null.
export async function load(userId) {
  try {
    const v = await tx('readonly', (s) => s.get(userId));
    return v && v.key instanceof CryptoKey && !v.key.extractable && v.historyKey instanceof CryptoKey ? v : null;
  } catch (e) {
    return null; // IndexedDB off (private window): nothing remembered
  }
}

export async function save(userId, entry) {
  if (entry.key.extractable || entry.historyKey.extractable) throw new Error('refusing to store an extractable key');
  await tx('readwrite', (s) => s.put({ publicKey: entry.publicKey, key: entry.key, historyKey: entry.historyKey }, userId));
}

export async function forget(userId) {
  try {
    await tx('readwrite', (s) => s.delete(userId));
  } catch (e) { /* nothing stored */ }
}
