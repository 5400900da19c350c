// tagrate's browser UI: ES modules, no build step, only the public REST API.
//
// The screens, one module each under screens/: adding a screen is a new
// module with a render(view) function plus one line here. `nav` puts it in
// the top bar, `admin` shows that link to admins only, `under` names the
// bar's link a screen belongs to. Every state change is a POST (or DELETE
// for a token), never a GET.

import { onUnauthorized } from "./lib/api.js";
import { go, start } from "./lib/router.js";
import { session } from "./lib/session.js";
import { applyTheme } from "./lib/theme.js";
import { header } from "./widgets/header.js";

applyTheme();

const SCREENS = {
  library: { nav: "Library", load: () => import("./screens/library.js") },
  image: { under: "library", load: () => import("./screens/viewer.js") },
  ratenext: { nav: "Rate next", load: () => import("./screens/ratenext.js") },
  upload: { nav: "Upload", load: () => import("./screens/upload.js") },
  albums: { nav: "Albums", load: () => import("./screens/albums.js") },
  album: { under: "albums", load: () => import("./screens/album.js") },
  model: { nav: "My model", load: () => import("./screens/model.js") },
  admin: { nav: "Admin", admin: true, load: () => import("./screens/admin.js") },
  duplicates: { nav: "Duplicates", admin: true, load: () => import("./screens/duplicates.js") },
  signin: { load: () => import("./screens/signin.js") },
};

onUnauthorized(() => {
  if (!session.auth) return;
  session.user = null;
  session.admin = false;
  go("#/signin");
});

start(SCREENS, header(SCREENS));
