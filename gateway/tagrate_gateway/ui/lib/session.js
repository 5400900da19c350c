// Who is using the page. With access control on, the gateway's session
// cookie says who (GET /whoami); with it off, the chosen user name is the only
// thing kept, in localStorage (it is not a secret). An admin token without a
// user picks whose data to show, kept for the browser tab.

import { api } from "./api.js";

const USER_KEY = "tagrate.user"; // auth off: the chosen user name (not a secret)
const ACTING_KEY = "tagrate.actingUser"; // an admin token without a user: whose data to show
export const USER_RE = /^[A-Za-z0-9_.-]{1,64}$/;

export const session = { auth: false, user: null, admin: false, ready: false };

export async function loadSession() {
  try {
    const who = await api("whoami");
    session.auth = Boolean(who.auth);
    session.user = who.user || null;
    session.admin = Boolean(who.admin);
  } catch (error) {
    if (error.status === 404) {
      // A gateway without access control: everyone may act as any user.
      Object.assign(session, { auth: false, user: null, admin: true });
    } else if (error.status === 401) {
      Object.assign(session, { auth: true, user: null, admin: false });
    } else {
      throw error;
    }
  }
  if (!session.auth) session.user = localStorage.getItem(USER_KEY);
  else if (session.admin && !session.user) session.user = sessionStorage.getItem(ACTING_KEY);
  session.ready = true;
}

export const signedIn = () => (session.auth ? session.admin || session.user !== null : session.user !== null);

export function chooseUser(name) {
  session.user = name;
  if (session.auth) sessionStorage.setItem(ACTING_KEY, name);
  else localStorage.setItem(USER_KEY, name);
}

/** Forget the chosen user (the sign-in screen asks again). */
export function forgetUser() {
  if (session.auth) sessionStorage.removeItem(ACTING_KEY);
  else localStorage.removeItem(USER_KEY);
  session.user = session.auth && !session.admin ? session.user : null;
}

export function signedOut() {
  sessionStorage.removeItem(ACTING_KEY);
  Object.assign(session, { user: null, admin: false });
}
