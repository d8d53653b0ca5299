// Log in: user name and password, then a TOTP code when the account has one.
import { ApiError, login } from "../api";
import { h } from "../util";
import { errorBox, message } from "../ui";

export function loginPage(root: HTMLElement, done: () => void): void {
  const err = errorBox();
  const username = h("input", { name: "username", autocomplete: "username", required: true, autofocus: true });
  const password = h("input", { name: "password", type: "password", autocomplete: "current-password", required: true });
  const code = h("input", { name: "totp", inputmode: "numeric", autocomplete: "one-time-code", pattern: "[0-9]{6}", maxlength: 6, placeholder: "123456" });
  const totpRow = h("label", { class: "field block", hidden: true }, h("span", null, "Authenticator code"), code);
  const submit = h("button", { class: "btn primary", type: "submit" }, "Log in");
  const form = h(
    "form",
    {
      class: "login card",
      onsubmit: async (e: Event) => {
        e.preventDefault();
        err.clear();
        submit.disabled = true;
        try {
          await login(username.value.trim(), password.value, totpRow.hidden ? undefined : code.value.trim());
          done();
        } catch (x) {
          if (x instanceof ApiError && x.code === "totp_required") {
            totpRow.hidden = false;
            code.required = true;
            code.focus();
            err.show("Enter the 6-digit code from your authenticator app.");
          } else if (x instanceof ApiError && x.code === "totp_invalid") {
            code.value = "";
            code.focus();
            err.show("That code is not valid (or has been used); try the next one.");
          } else {
            err.show(message(x));
          }
        } finally {
          submit.disabled = false;
        }
      },
    },
    h("h1", { class: "brand big" }, "tapstream"),
    h("p", { class: "muted" }, "Network traffic analysis"),
    h("label", { class: "field block" }, h("span", null, "User name"), username),
    h("label", { class: "field block" }, h("span", null, "Password"), password),
    totpRow,
    err,
    submit,
  );
  root.append(form);
}
