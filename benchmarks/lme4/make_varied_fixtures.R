# Reference fits of lme4 on twelve small transfer grids with slopes by target that vary in what
# makes fits hard (tests/test_lmm_lme4.py): 3, 5 or 9 targets; 20, 40 or 80 mixes; slope SDs of
# 0, 0.3, 1 and 3 times; slope correlations of 0, 0.6 and -0.95; mix SDs of 0, 0.3 and 1 (many
# of the fits are singular). Regenerate from the repository root:
#
#     Rscript benchmarks/lme4/make_varied_fixtures.R
#
# Writes tests/fixtures/lme4/varied_grids.csv (all grids, a column "grid") and
# varied_grids_lme4.csv: for each grid and each of the correlated ("|") and uncorrelated ("||")
# models, without and with a target-by-mix intercept (1 | target_task:mix), lme4's REML
# criterion, isSingular, the fixed effects of div and vol, and lmerTest's Satterthwaite standard
# error and df of div - vol.

suppressMessages({library(lme4); library(lmerTest)})
out <- file.path("tests", "fixtures", "lme4")
control <- lmerControl(optimizer = "bobyqa", optCtrl = list(rhoend = 1e-12, maxfun = 1e5))

simulate_grid <- function(k) {
  set.seed(20260 + k)
  n_t <- c(3, 5, 9)[k %% 3 + 1]; n_l <- 6; n_m <- c(20, 40, 80)[(k %/% 4) %% 3 + 1]
  slope_sd <- c(0, 0.3, 1, 3)[k %% 4 + 1]
  corr <- c(0, 0.6, -0.95)[k %% 3 + 1]
  mix_sd <- c(0, 0.3, 1)[(k + 1) %% 3 + 1]
  div <- sample(0:4, n_m, replace = TRUE); div <- div - mean(div)
  vol <- sample(0:4, n_m, replace = TRUE); vol <- vol - mean(vol)
  sds <- c(2, slope_sd, 0.7 * slope_sd)
  R <- diag(3); R[2, 3] <- R[3, 2] <- corr
  effects <- matrix(rnorm(3 * n_t), n_t) %*% chol(R) %*% diag(sds)
  rows <- do.call(rbind, lapply(seq_len(n_m), function(m) {
    targets <- sample(n_t, max(1, n_t %/% 2))
    expand.grid(l = seq_len(n_l), t = targets, m = m)
  }))
  language <- matrix(rnorm(n_t * n_l, 0, 1.5), n_t)
  mix <- rnorm(n_m, 0, mix_sd)
  y <- 50 + div[rows$m] + 0.5 * vol[rows$m] + effects[cbind(rows$t, 1)] +
    effects[cbind(rows$t, 2)] * div[rows$m] + effects[cbind(rows$t, 3)] * vol[rows$m] +
    language[cbind(rows$t, rows$l)] + mix[rows$m] + rnorm(nrow(rows), 0, 1.5)
  data.frame(grid = k, y = round(y, 4), div = div[rows$m], vol = vol[rows$m],
             target_task = sprintf("t%d", rows$t), language = sprintf("l%d", rows$l),
             mix = sprintf("m%03d", rows$m))
}

grids <- do.call(rbind, lapply(0:11, simulate_grid))
write.csv(grids, file.path(out, "varied_grids.csv"), row.names = FALSE)
results <- list()
for (k in 0:11) for (bar in c("|", "||")) for (target_mix in c("", " + (1 | target_task:mix)")) {
  f <- as.formula(sprintf(
    "y ~ div * vol + (1 + div + vol %s target_task) + (1 | target_task:language) + (1 | mix)%s",
    bar, target_mix))
  fit <- suppressMessages(suppressWarnings(lmer(f, data = grids[grids$grid == k, ], REML = TRUE,
                                                control = control)))
  satterthwaite <- contest(fit, c(0, 1, -1, 0), joint = FALSE, ddf = "Satterthwaite")
  results[[length(results) + 1]] <- data.frame(
    grid = k, bar = bar, target_mix = as.integer(target_mix != ""), criterion = format(REMLcrit(fit), digits = 17),
    singular = as.integer(isSingular(fit)), div = format(fixef(fit)[["div"]], digits = 17),
    vol = format(fixef(fit)[["vol"]], digits = 17),
    se = format(satterthwaite[["Std. Error"]], digits = 17), df = format(satterthwaite$df, digits = 17))
}
write.csv(do.call(rbind, results), file.path(out, "varied_grids_lme4.csv"), row.names = FALSE)
